"""The coordinator's study-package adapters: sandboxed runners, never package code in it.

A study whose model is a package needs that package's ``init_params`` once, for round 0's
parameters (:func:`fedcare.strategy.driver.start_study`). The coordinator does not import the
package: :func:`package_models` gives the study runner a
:class:`~fedcare.models.sandboxed_packages.SandboxedPackages` builder whose runners read the
package's files from ``HOME/package-files`` (a :class:`~fedcare.packages.store.PackageStore`).
A package not yet there is extracted, once, from its archive ``HOME/packages/<hex>.fcpkg``
(where ``fedcare study submit`` stores the verified archive), re-verifying its files and
signature on the way. The runner gets the same generator state as a simulation's in-process
adapter, so both start from the same parameters.
"""

from __future__ import annotations

from pathlib import Path

from fedcare.models.package_runner import RunnerLimits
from fedcare.models.sandboxed_packages import SandboxedPackages
from fedcare.packages.sandbox import SandboxMode
from fedcare.packages.store import PackageStore, hash_hex

__all__ = ["ARCHIVES_DIR", "FILES_DIR", "package_models"]

#: Where the coordinator keeps verified archives, ``<hex>.fcpkg`` (``fedcare study submit``).
ARCHIVES_DIR = "packages"
#: Where their files are extracted for the sandboxed runner.
FILES_DIR = "package-files"


def package_models(
    home: Path, *, mode: SandboxMode = "prefer", limits: RunnerLimits | None = None
) -> SandboxedPackages:
    """The package builder of the coordinator whose home is ``home`` (module docstring)."""
    store = PackageStore(Path(home) / FILES_DIR)

    def extract(ref: str) -> None:
        archive = Path(home) / ARCHIVES_DIR / f"{hash_hex(ref)}.fcpkg"
        if archive.is_file():
            store.add_archive(archive)

    return SandboxedPackages(store, mode=mode, limits=limits, on_missing=extract)
