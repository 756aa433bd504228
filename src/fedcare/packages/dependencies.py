"""Whether this installation satisfies a study package's declared dependencies.

:func:`dependency_status` checks each PEP 508 dependency the manifest declares against the
distributions installed in *this* Python (``importlib.metadata``), so a site refuses a package
it cannot run and names what is missing or at the wrong version, and a steward's review shows
each one. Nothing here imports or runs package code: only the manifest is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from fedcare.records.package import PackageManifest

__all__ = ["DependencyStatus", "dependency_problems", "dependency_status"]


@dataclass(frozen=True)
class DependencyStatus:
    """One declared dependency and whether this installation satisfies it."""

    requirement: str
    installed: str | None
    ok: bool

    def describe(self) -> str:
        """``numpy<2 (installed 2.1.0)``, ``torch>=2.0 (not installed)``."""
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} (installed {self.installed})"


def dependency_status(manifest: PackageManifest) -> list[DependencyStatus]:
    """Every dependency of ``manifest`` whose marker applies here, checked against what is
    installed (pre-releases count as versions)."""
    from packaging.requirements import Requirement

    out = []
    for text in manifest.dependencies:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed: str | None = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            installed = None
        ok = installed is not None and req.specifier.contains(installed, prereleases=True)
        out.append(DependencyStatus(text, installed, ok))
    return out


def dependency_problems(manifest: PackageManifest) -> list[str]:
    """The dependencies of ``manifest`` this installation lacks or has at another version."""
    return [d.describe() for d in dependency_status(manifest) if not d.ok]
