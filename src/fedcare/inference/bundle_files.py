"""The files of a model bundle as bytes: ``.npz`` and JSON encodings, the manifest, a folder
or zip read and written (:mod:`fedcare.inference.bundle` describes the format and re-exports
these)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ConfigError, ValidationError

__all__ = [
    "BUNDLE_FILES",
    "FORMAT",
    "json_bytes",
    "manifest_of",
    "npz_bytes",
    "read_bundle_files",
    "read_npz",
    "sha256_of",
    "with_manifest",
    "write_bundle",
]

FORMAT, FORMAT_VERSION = "fedcare-model-bundle", 1
DESCRIPTION, PARAMS, STATISTICS = "bundle.json", "params.npz", "preprocess.npz"
CARD, LINEAGE, MANIFEST = "model_card.json", "lineage.json", "manifest.json"
#: Every file a bundle may hold, in the order they are written (manifest last).
BUNDLE_FILES = (CARD, LINEAGE, PARAMS, DESCRIPTION, STATISTICS, MANIFEST)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: same files, same bytes
_TASKS = {"logistic": "binary", "sklearn": "binary", "cox": "survival"}


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """An ``.npz`` archive of ``arrays`` as ``numpy.savez`` lays it out, with fixed times."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def read_npz(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValidationError(
            f"bundle file {name!r} is not a readable .npz archive: {err}"
        ) from None


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_of(files: Mapping[str, bytes]) -> dict[str, Any]:
    entries = [
        {"path": n, "sha256": sha256_of(files[n]), "size": len(files[n])} for n in sorted(files)
    ]
    listing = "".join(f"{e['path']},{e['sha256']},{e['size']}\n" for e in entries)
    return {"format": FORMAT, "files": entries, "bundle_sha256": sha256_of(listing.encode())}


def with_manifest(files: Mapping[str, bytes]) -> dict[str, bytes]:
    body = {n: files[n] for n in BUNDLE_FILES if n in files and n != MANIFEST}
    return {**body, MANIFEST: json_bytes(manifest_of(body))}


def read_bundle_files(path: Path) -> dict[str, bytes]:
    """The files of a bundle folder or zip (no check against the manifest yet).

    Raises
    ------
    ConfigError
        If ``path`` is neither, or a member is not a plain file name of :data:`BUNDLE_FILES`.
    """
    path = Path(path)
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        unknown = [n for n in names if n not in BUNDLE_FILES]
        if unknown:
            raise ValidationError(f"bundle {path}: file {unknown[0]!r} is not in its manifest")
        return {n: (path / n).read_bytes() for n in names if (path / n).is_file()}
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            unknown = [n for n in names if n not in BUNDLE_FILES]
            if unknown:
                raise ValidationError(f"bundle {path}: file {unknown[0]!r} is not in its manifest")
            return {n: zf.read(n) for n in names}
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as err:
        raise ConfigError(f"{path} is not a model bundle (a folder or a zip): {err}") from None


def write_bundle(files: Mapping[str, bytes], out: Path) -> Path:
    """Write ``files`` into folder ``out``, or as one zip when ``out`` ends in ``.zip``."""
    out = Path(out)
    if out.suffix == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), data)
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out
