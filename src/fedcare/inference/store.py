"""A site's local model store: the bundles its steward approved, verified, with their cards.

Laid out under the site's state folder (``fedcare site start --state``)::

    models/
      index.json                  {version: {bundle_sha256, stored_sha256, taken_at,
                                   deployment_id, status: active|retired, approved_by}}
      <version>/bundle/...        the verified bundle files (write_bundle's layout)
      <version>/...               what monitoring keeps beside it (reference, predictions...)

``bundle_sha256`` is the hash of the bundle the coordinator sent (and signed);
``stored_sha256`` the hash of the bundle kept, which differs when the site froze its own
training statistics into a model trained with local scaling
(:func:`fedcare.inference.site_statistics.freeze_local_statistics`). :meth:`ModelStore.take`
verifies the files against their manifest before anything is written, writes the bundle into
a temporary folder renamed into place, then rewrites the index atomically (write, then
rename), so a crash leaves either the old or the new state. :meth:`ModelStore.bundle` verifies
the kept files against ``stored_sha256`` each time it loads them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError, NotFoundError, ValidationError
from fedcare.inference.bundle import (
    DESCRIPTION,
    ModelBundle,
    load_bundle,
    verify_files,
    write_bundle,
)

__all__ = [
    "INDEX_FILE",
    "MODELS_DIR",
    "ModelStore",
    "bundle_version",
    "resolve_bundle",
    "store_folder",
]

MODELS_DIR = "models"
INDEX_FILE = "index.json"
BUNDLE_DIR = "bundle"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def bundle_version(files: Mapping[str, bytes]) -> str:
    """The registry version a bundle's ``bundle.json`` names (``source.version``).

    Raises
    ------
    ValidationError
        If the bundle names no version, or one that cannot be a folder name.
    """
    try:
        description = json.loads(files[DESCRIPTION])
        version = str((description.get("source") or {})["version"])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise ValidationError(
            f"the bundle's {DESCRIPTION} names no version (source.version)"
        ) from None
    return _check_version(version)


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValidationError(
            f"model version {version!r} is not a valid name (letters, digits, '.', '_', '-')"
        )
    return version


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelStore:
    """The models a site took, under ``root`` (``<state>/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> ModelStore:
        return cls(Path(state_dir) / MODELS_DIR)

    # reading ---------------------------------------------------------------------------------
    def versions(self) -> dict[str, dict[str, Any]]:
        """``{version: entry}`` of the index (empty when nothing was taken yet).

        Raises
        ------
        ConfigError
            If the index exists but is not a JSON object (names the file).
        """
        path = self.root / INDEX_FILE
        if not path.exists():
            return {}
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"the model store's index {path} cannot be read: {err}") from None
        if not isinstance(index, dict):
            raise ConfigError(f"the model store's index {path} is not a JSON object")
        return {str(k): dict(v) for k, v in index.items() if isinstance(v, dict)}

    def entry(self, version: str) -> dict[str, Any]:
        """The index entry of ``version``; NotFoundError naming it and what the store holds."""
        versions = self.versions()
        if version not in versions:
            held = ", ".join(sorted(versions)) or "none"
            raise NotFoundError(
                f"model {version!r} is not in this site's model store {self.root} "
                f"(it holds: {held}); a steward takes a model with "
                "`fedcare site approve-deployment VERSION`"
            )
        return versions[version]

    def path(self, version: str) -> Path:
        """The folder of ``version`` (its bundle is under ``bundle/``)."""
        self.entry(_check_version(version))
        return self.root / version

    def bundle_path(self, version: str) -> Path:
        return self.path(version) / BUNDLE_DIR

    def bundle(self, version: str) -> ModelBundle:
        """The kept bundle of ``version``, verified against the hash the store recorded.

        Raises
        ------
        NotFoundError
            If the store does not hold ``version``.
        ValidationError
            If a kept file was changed since (names it).
        """
        entry = self.entry(_check_version(version))
        expected = str(entry.get("stored_sha256") or entry.get("bundle_sha256"))
        return load_bundle(self.root / version / BUNDLE_DIR, expected_hash=expected)

    # writing ---------------------------------------------------------------------------------
    def take(
        self,
        bundle_files: Mapping[str, bytes],
        *,
        deployment_id: str,
        approved_by: str,
        bundle_sha256: str | None = None,
    ) -> Path:
        """Verify ``bundle_files`` and keep them as their version; return its folder.

        ``bundle_sha256``: the hash of the bundle as it was deployed when the files given are
        a site-frozen copy of it (the store records both); default: the files' own hash.
        Taking a version again replaces its bundle (a retired one becomes active again) and
        keeps whatever else its folder holds.

        Raises
        ------
        ValidationError
            A file changed, missing or not in the manifest (names it), or no version.
        """
        stored = verify_files(bundle_files, "to take")
        version = bundle_version(bundle_files)
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=folder))
        try:
            write_bundle(bundle_files, staging / BUNDLE_DIR)
            target = folder / BUNDLE_DIR
            old = folder / ".bundle-old"
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
            (staging / BUNDLE_DIR).rename(target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._update(
            version,
            {
                "bundle_sha256": bundle_sha256 or stored,
                "stored_sha256": stored,
                "taken_at": _now(),
                "deployment_id": deployment_id,
                "status": "active",
                "approved_by": approved_by,
            },
        )
        return folder

    def retire(self, version: str) -> dict[str, Any]:
        """Mark ``version`` retired (its files stay); returns its entry."""
        entry = {**self.entry(_check_version(version)), "status": "retired", "retired_at": _now()}
        self._update(version, entry)
        return entry

    def _update(self, version: str, entry: Mapping[str, Any]) -> None:
        index = self.versions()
        index[version] = dict(entry)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(index, out, indent=2, sort_keys=True)
            os.replace(tmp, self.root / INDEX_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def resolve_bundle(model: str, state_dir: Path, *, expected_hash: str | None = None) -> ModelBundle:
    """The bundle ``--model`` names: a bundle folder or zip, else a version in the model store
    under ``state_dir`` (verified against the hash the store recorded, and ``expected_hash``
    when given: the deployed bundle's or the kept one's).

    Raises
    ------
    NotFoundError
        Neither a path nor a version the store holds (names what the store holds).
    ValidationError
        A changed file, or a hash other than ``expected_hash``.
    """
    path = Path(model)
    if path.exists():
        return load_bundle(path, expected_hash=expected_hash)
    store = ModelStore.in_state_dir(state_dir)
    try:
        entry = store.entry(model)
    except NotFoundError as err:
        raise NotFoundError(f"--model {model!r} is no bundle folder or zip, and {err}") from None
    bundle = store.bundle(model)
    if expected_hash is not None and expected_hash not in (
        bundle.bundle_hash,
        entry.get("bundle_sha256"),
    ):
        raise ValidationError(
            f"model {model} in the store has hash {bundle.bundle_hash} (deployed as "
            f"{entry.get('bundle_sha256')}), expected {expected_hash}; refused"
        )
    return bundle


def store_folder(model: str, state_dir: Path) -> Path:
    """Where ``--model`` lives: the path itself when it exists, else the version's folder in
    the model store under ``state_dir`` (its ``bundle/`` beside the prediction log)."""
    path = Path(model)
    if path.exists():
        return path
    return ModelStore.in_state_dir(state_dir).path(model)
