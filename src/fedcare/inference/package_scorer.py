"""A study package's model at a site: its package checked in the site's store, then run.

A bundle of a ``model: {kind: package}`` study names its package by hash (``bundle.json``'s
``model.package``, ``sha256:<hex>``) with its name, version and task. ``site predict`` runs it
only from the site's own package store (``STATE/packages``), where a package arrives verified
(signature, signer certified by the federation CA) when the site's agent checks a plan that
runs it, or when the steward approves such a study file (``fedcare site approve STUDY.yaml``).
Before anything runs, :func:`require_site_package` checks that:

1. the store holds the package (else :class:`~fedcare.errors.NotFoundError` naming its name,
   version and hash, and how a site obtains it);
2. its files hash to the bundle's package hash (a file changed on disk is refused);
3. its manifest's name, version and task are the bundle's;
4. given the site policy's trusted signers (``site predict`` requires its ``--policy``), its
   signer is one of them.

The model then runs through the builder the site's worker uses for training
(:func:`fedcare.site.worker.package_builder`: a sandboxed runner process under the policy's
sandbox mode and limits, never in the caller), given by the caller as ``packages``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.errors import ConfigError, NotFoundError, PackageError, ValidationError
from fedcare.models.base import ModelAdapter
from fedcare.packages.archive import content_list, read_folder
from fedcare.packages.store import PackageStore, hash_hex, hash_ref
from fedcare.records.arrays import ArrayRecord

__all__ = ["PackageBuilder", "describe_package", "package_model", "require_site_package"]

#: Resolves a package spec to an adapter (a site: ``SandboxedPackages``).
PackageBuilder = Callable[[Mapping[str, Any]], ModelAdapter]


def describe_package(spec: Mapping[str, Any]) -> str:
    """``name version (sha256:<hex>)`` of a package spec."""
    return f"{spec.get('name')} {spec.get('version')} ({spec.get('package')})"


def require_site_package(
    spec: Mapping[str, Any],
    store: PackageStore,
    *,
    trusted_signers: Sequence[str] | None = None,
) -> None:
    """Check that the site may run the package ``spec`` names (see the module docstring).

    Raises
    ------
    ConfigError
        The spec names no package hash.
    NotFoundError
        The site's store does not hold the package.
    ValidationError
        Its stored files do not hash to the bundle's package hash, or its manifest differs.
    PackageError
        Its signer is not trusted by the given policy.
    """
    ref = spec.get("package")
    try:
        hex_ = hash_hex(str(ref))
    except ConfigError:
        raise ConfigError(
            f"the bundle's package model names no package hash (got {ref!r}); export the "
            "model again from the coordinator"
        ) from None
    named = describe_package({**spec, "package": hash_ref(hex_)})
    if not store.has(hex_):
        raise NotFoundError(
            f"the model runs study package {named}, which is not in this site's package store "
            f"{store.root}. A site holds a package once it verified it for a study plan its "
            "steward approved: approve the study that trained the model with its study file "
            "naming the signed archive (`fedcare site approve STUDY.yaml --state STATE`), or "
            "let the site agent fetch it for the study's plan; then run site predict again"
        )
    folder = store.folder(hex_)
    try:
        manifest, files = read_folder(folder)
    except ConfigError as err:
        raise ValidationError(f"package {named} in {folder} cannot be read: {err}") from None
    got = hashlib.sha256(content_list(manifest, files)).hexdigest()
    if got != hex_:
        raise ValidationError(
            f"package {named} in {folder} was changed on disk: its files hash to "
            f"sha256:{got}; refused (remove the folder and let the site verify it again)"
        )
    for key in ("name", "version", "task"):
        if key in spec and spec[key] != getattr(manifest, key):
            raise ValidationError(
                f"package {named}: the bundle says {key} {spec[key]!r}, its manifest "
                f"{getattr(manifest, key)!r}"
            )
    if trusted_signers is not None:
        signer = store.info(hex_).get("signer")
        if signer not in trusted_signers:
            raise PackageError(
                f"package {named} is signed by {signer or 'nobody (an unsigned folder)'!s}, "
                "whom this site's policy does not trust (packages.trusted_signers: "
                f"{', '.join(trusted_signers) or 'none'})"
            )


def package_model(
    spec: Mapping[str, Any], params: Mapping[str, np.ndarray], packages: PackageBuilder | None
) -> Callable[[np.ndarray], np.ndarray]:
    """The package model's scores as a function of preprocessed rows, run by ``packages``.

    Raises
    ------
    ConfigError
        No builder was given (a package model runs only through the site's package runner).
    """
    if packages is None:
        raise ConfigError(
            f"the model is study package {describe_package(spec)}: it runs only through the "
            "site's package runner (give the site's state folder, --state, and its --policy)"
        )
    adapter = packages(spec)
    record = ArrayRecord(dict(params))
    return lambda X: np.asarray(adapter.predict(record, X), dtype=np.float64)
