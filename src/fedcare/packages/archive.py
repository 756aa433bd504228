"""Build a study package: a reproducible, signed zip archive of a package folder.

What goes in: the manifest (``fedcare-package.yaml``), every ``*.py`` file under the folder
(``__pycache__`` and hidden folders are skipped) and the data files the manifest lists. A
symlink, a data path outside the folder or a missing data file is refused. Next to them the
archive holds:

- ``MANIFEST.json``, the content list: ``{"format": 1, "name", "version", "files": [{"path",
  "sha256", "size"}, ...]}`` in canonical JSON (sorted keys, no spaces, files sorted by path);
- ``SIGNATURE.json``: ``{"algorithm", "package_hash", "certificate" (PEM), "signature"}``.

The **package hash** is the SHA-256 of the ``MANIFEST.json`` bytes, so it names the content,
not the zip container (whose bytes would change with the compressor). The zip itself is made
reproducible too: entries sorted, timestamps 1980-01-01 00:00, mode 0644, no extra fields,
deflate level 9; the signature is deterministic (RFC 6979). Building the same folder twice,
from any path and whatever the files' mtimes, gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.errors import ConfigError
from fedcare.packages.signing import SIGNATURE_ALGORITHM, sign_hash
from fedcare.records.package import MANIFEST_FILE, PackageManifest, check_package_path

__all__ = [
    "CONTENT_LIST",
    "FORMAT_VERSION",
    "SIGNATURE_FILE",
    "BuiltPackage",
    "build_package",
    "canonical_json",
    "content_list",
    "package_files",
    "read_folder",
]

CONTENT_LIST = "MANIFEST.json"
SIGNATURE_FILE = "SIGNATURE.json"
FORMAT_VERSION = 1
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MODE = 0o100644  # a regular file, rw-r--r--


@dataclass(frozen=True)
class BuiltPackage:
    """What :func:`build_package` wrote: the archive's path, package hash and manifest."""

    path: Path
    hash: str
    manifest: PackageManifest


def canonical_json(doc: Any) -> bytes:
    """``doc`` as canonical JSON: sorted keys, no whitespace, ASCII, a final newline."""
    return (
        json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
    ).encode()


def _skip(rel: Path) -> bool:
    """Hidden files and folders and ``__pycache__`` never go into a package."""
    return any(p == "__pycache__" or p.startswith(".") for p in rel.parts)


def package_files(src_dir: Path, manifest: PackageManifest) -> dict[str, Path]:
    """The files of a package folder, by archive path: manifest, ``*.py`` and declared data.

    Raises
    ------
    ConfigError
        A symlink, a data file missing or outside the folder, an unsafe file name.
    """
    root = src_dir.resolve()
    files: dict[str, Path] = {}
    for path in sorted(src_dir.rglob("*")):
        rel = path.relative_to(src_dir)
        if _skip(rel):
            continue
        if path.is_symlink():
            raise ConfigError(f"file {rel.as_posix()}: a symlink; packages hold only plain files")
        if path.suffix == ".py" and path.is_file():
            files[check_package_path(rel.as_posix())] = path
    files[MANIFEST_FILE] = src_dir / MANIFEST_FILE
    for name in manifest.data:
        path = src_dir / name
        if not path.resolve().is_relative_to(root) or path.is_symlink():
            raise ConfigError(f"data file {name}: outside the package folder {src_dir}")
        if not path.is_file():
            raise ConfigError(f"data file {name}: listed in {MANIFEST_FILE} but not found")
        files[name] = path
    for reserved in (CONTENT_LIST, SIGNATURE_FILE):
        if reserved in files:
            raise ConfigError(f"file {reserved}: the name is reserved for the archive's own use")
    return dict(sorted(files.items()))


def read_folder(src: Path) -> tuple[PackageManifest, dict[str, bytes]]:
    """A package folder's manifest and the bytes of every file that goes into the package."""
    manifest = PackageManifest.from_folder(src)
    files = {name: path.read_bytes() for name, path in package_files(src, manifest).items()}
    return manifest, files


def content_list(manifest: PackageManifest, files: dict[str, bytes]) -> bytes:
    """``MANIFEST.json`` for ``files`` (sorted by path): its SHA-256 is the package hash."""
    return canonical_json(
        {
            "format": FORMAT_VERSION,
            "name": manifest.name,
            "version": manifest.version,
            "files": [
                {"path": n, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                for n, b in sorted(files.items())
            ],
        }
    )


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so the mode below is read as one
    info.external_attr = _MODE << 16
    return info


def build_package(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
) -> BuiltPackage:
    """Build, hash and sign the package in ``src_dir`` into the archive ``out_path``.

    Parameters
    ----------
    src_dir:
        The package folder, with ``fedcare-package.yaml``.
    out_path:
        Where to write the archive (replaced atomically if it exists).
    key, cert:
        The researcher's private key and certificate (a researcher kit's ``key.pem`` and
        ``cert.pem``); the certificate travels in ``SIGNATURE.json``.

    Raises
    ------
    ConfigError
        The manifest is invalid (names the field), a file is refused (names it), or the key
        does not match the certificate.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ConfigError(f"package folder {src} does not exist")
    manifest, files = read_folder(src)
    content = content_list(manifest, files)
    package_hash = hashlib.sha256(content).hexdigest()
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ConfigError("the signing key does not belong to the certificate given")
    signature = {
        "algorithm": SIGNATURE_ALGORITHM,
        "package_hash": package_hash,
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        "signature": sign_hash(key, package_hash),
    }
    entries = {**files, CONTENT_LIST: content, SIGNATURE_FILE: canonical_json(signature)}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as archive:
            for name in sorted(entries):
                archive.writestr(_entry(name), entries[name], compresslevel=9)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BuiltPackage(out, package_hash, manifest)
