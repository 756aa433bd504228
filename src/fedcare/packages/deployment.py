"""What a deployment needs to know of a package without running it: its spec, its dependencies.

- :func:`package_spec`: the model spec a plan carries for a verified package,
  ``{"kind": "package", "package": "sha256:<hex>", "name", "version", "task", "options"}``;
  the coordinator writes it at submission and a steward's review computes the same, so both
  give the same plan hash.
- :func:`dependency_status`: each PEP 508 dependency the manifest declares, checked against the
  distributions installed in *this* Python (``importlib.metadata``), so a site refuses a
  package it cannot run and names what is missing or at the wrong version.

Nothing here imports or runs package code: only the manifest is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fedcare.errors import ConfigError
from fedcare.records.package import PackageManifest

__all__ = [
    "PACKAGE_KIND",
    "DependencyStatus",
    "dependency_problems",
    "dependency_status",
    "is_package_spec",
    "package_spec",
]

#: The model kind of a study whose model is a study package.
PACKAGE_KIND = "package"


def is_package_spec(spec: Any) -> bool:
    """Whether a model spec (a study's or a plan's ``model``) names a study package."""
    return isinstance(spec, Mapping) and spec.get("kind") == PACKAGE_KIND


def package_spec(ref: str, manifest: PackageManifest, options: Any = None) -> dict[str, Any]:
    """The plan's model spec of the package ``ref`` (``sha256:<hex>``) with ``manifest``.

    Raises
    ------
    ConfigError
        If ``options`` is not a mapping (the entry point's keyword arguments).
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"model.options must be a mapping of keyword arguments, got {options!r}")
    return {
        "kind": PACKAGE_KIND,
        "package": ref,
        "name": manifest.name,
        "version": manifest.version,
        "task": manifest.task,
        "options": dict(options),
    }


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
