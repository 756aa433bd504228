"""The coordinator's study-package adapters: sandboxed runners, never package code in it.

A study whose model is a package needs that package's ``init_params`` once, for round 0's
parameters (:func:`fedcare.strategy.driver.start_study`). The coordinator does not import the
package: :func:`package_models` gives the study runner a
:class:`~fedcare.models.sandboxed_packages.SandboxedPackages` builder whose runners read the
package's verified files from the coordinator's store
(:meth:`fedcare.coordinator.packages.CoordinatorPackages.files`, ``HOME/packages/<hex>/``). A
package whose archive is stored (``HOME/packages/<hex>.fcpkg``, verified against the
federation CA at submission) but whose files are not is extracted from it first, its files and
signature verified again. The runner gets the same generator state as a simulation's
in-process adapter, so both start from the same parameters.
"""

from __future__ import annotations

from pathlib import Path

from fedcare.coordinator.packages import CoordinatorPackages
from fedcare.models.package_runner import RunnerLimits
from fedcare.models.sandboxed_packages import SandboxedPackages
from fedcare.packages.sandbox import SandboxMode

__all__ = ["package_models"]


def package_models(
    home: Path, *, mode: SandboxMode = "prefer", limits: RunnerLimits | None = None
) -> SandboxedPackages:
    """The package builder of the coordinator whose home is ``home`` (module docstring)."""
    packages = CoordinatorPackages(home)
    store = packages.files()

    def extract(ref: str) -> None:
        if packages.has(ref):
            store.add_archive(packages.path(ref))

    return SandboxedPackages(store, mode=mode, limits=limits, on_missing=extract)
