"""A study's ``kind: package`` model spec, resolved to the package hash that the plan binds.

A study file names its package by folder, by signed archive (``.fcpkg``) or by hash::

    model:
      kind: package
      package: packages/resnet18      # folder | archive | sha256:<hex>
      options: {width: 16}            # the entry point's keyword arguments

:func:`resolve_package_model` stores the package (:class:`~fedcare.packages.store.PackageStore`)
and returns the spec that travels in the plan, so the plan hash covers the package's content:
``{"kind": "package", "package": "sha256:<hex>", "name", "version", "task", "requires",
"options"}`` (``requires``: the distribution names of the manifest's dependencies, whose
installed versions the plan records).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError
from fedcare.packages.store import PackageStore, hash_ref
from fedcare.records.study import StudyConfig

__all__ = [
    "PACKAGE_SPEC_KEYS",
    "is_package_model",
    "resolve_package_model",
    "resolve_study_package",
]

#: The keys of a package model spec (a study file gives ``kind``, ``package``, ``options``).
PACKAGE_SPEC_KEYS = frozenset({"kind", "package", "options", "name", "version", "task", "requires"})


def is_package_model(model: Mapping[str, Any]) -> bool:
    """Whether a model spec names a study package (``kind: package``)."""
    return model.get("kind") == "package"


def _requirement_names(dependencies: tuple[str, ...]) -> list[str]:
    from packaging.requirements import Requirement

    return sorted(Requirement(d).name.lower().replace("_", "-") for d in dependencies)


def resolve_package_model(
    model: Mapping[str, Any], store: PackageStore | None = None
) -> dict[str, Any]:
    """The plan's model spec for a study's package ``model`` (stored in ``store`` on the way).

    A spec already resolved (``package: sha256:...`` with its name, version, task) is checked
    against the stored manifest and returned as it is.

    Raises
    ------
    ConfigError
        Unknown keys, options that are not a mapping, a path that is neither a folder nor an
        archive, a ``task`` or name the package does not declare.
    PackageError
        An archive that does not verify, a hash not in the store.
    """
    unknown = sorted(set(model) - PACKAGE_SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"package model spec: unknown key(s) {unknown}; valid: {sorted(PACKAGE_SPEC_KEYS)}"
        )
    options = model.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"package model spec: 'options' must be a mapping, got {options!r}")
    ref = model.get("package")
    if not isinstance(ref, str) or not ref:
        raise ConfigError(
            "a package model needs 'package': a package folder, a .fcpkg archive or "
            f"sha256:<hash>; got {ref!r}"
        )
    store = store or PackageStore()
    if ref.startswith("sha256:"):
        ref = hash_ref(ref)
    else:
        path = Path(ref)
        if path.is_dir():
            ref = store.add_folder(path)
        elif path.is_file():
            ref = store.add_archive(path)
        else:
            raise ConfigError(
                f"package model spec: package {ref!r} is no folder, archive or sha256:<hash>"
            )
    manifest = store.manifest(ref)
    resolved = {
        "kind": "package",
        "package": ref,
        "name": manifest.name,
        "version": manifest.version,
        "task": manifest.task,
        "requires": _requirement_names(manifest.dependencies),
        "options": dict(options),
    }
    for key in ("name", "version", "task", "requires"):
        if key in model and model[key] != resolved[key]:
            raise ConfigError(
                f"package model spec: {key} {model[key]!r} differs from package {ref}'s "
                f"{resolved[key]!r}"
            )
    return resolved


def resolve_study_package(study: StudyConfig, store: PackageStore | None = None) -> StudyConfig:
    """``study`` with its package model resolved (see :func:`resolve_package_model`), once, so
    that every round of it runs the same stored package whatever happens to the folder."""
    if not is_package_model(study.model):
        return study
    return study.model_copy(update={"model": resolve_package_model(study.model, store)})
