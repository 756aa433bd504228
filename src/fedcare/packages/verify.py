"""Read and verify a study package archive (see :mod:`fedcare.packages.archive`).

:func:`read_package` opens an archive and parses its three fixed parts without trusting
them; :func:`verify_package` checks, in this order, and stops at the first failure with a
:class:`~fedcare.errors.PackageError` that names the file or the reason:

1. every file listed in ``MANIFEST.json`` is in the archive with that SHA-256 and size, and no
   other file is (``MANIFEST.json`` and ``SIGNATURE.json`` aside);
2. ``SIGNATURE.json`` names the package hash (SHA-256 of ``MANIFEST.json``) and its signature
   verifies with the certificate it carries;
3. that certificate was issued by the federation CA given, is within its validity period,
   and is a researcher's (:func:`fedcare.packages.signing.check_signer`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from fedcare.errors import ConfigError, PackageError
from fedcare.packages.archive import CONTENT_LIST, FORMAT_VERSION, SIGNATURE_FILE, canonical_json
from fedcare.packages.signing import (
    SIGNATURE_ALGORITHM,
    Signer,
    check_signer,
    verify_hash_signature,
)
from fedcare.records.package import MANIFEST_FILE, PackageManifest, check_package_path

__all__ = [
    "MAX_PACKAGE_BYTES",
    "PackageContents",
    "PackageFile",
    "VerifiedPackage",
    "check_files",
    "check_signature",
    "read_package",
    "verify_package",
]

#: The most an archive may unpack to (all files together): a guard against zip bombs.
MAX_PACKAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PackageFile:
    """One file as ``MANIFEST.json`` lists it."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PackageContents:
    """An archive as read, nothing checked yet but its structure."""

    path: Path
    hash: str
    name: str
    version: str
    listed: tuple[PackageFile, ...]
    data: dict[str, bytes]
    signature: dict[str, Any]
    certificate: x509.Certificate

    def manifest(self) -> PackageManifest:
        """The package's ``fedcare-package.yaml``, validated (ConfigError names the field)."""
        source = f"{self.path.name}:{MANIFEST_FILE}"
        if MANIFEST_FILE not in self.data:
            raise PackageError(f"file {MANIFEST_FILE}: missing from the archive")
        try:
            doc = yaml.safe_load(self.data[MANIFEST_FILE].decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        return PackageManifest.from_data(doc, source)


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose files, signature and signer verified.

    ``data`` holds the verified bytes of every file by path, so that whoever loads the code
    later uses exactly what was checked, without reading the archive again.
    """

    hash: str
    manifest: PackageManifest
    signer: Signer
    files: tuple[PackageFile, ...]
    path: Path
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)


def _json(raw: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise PackageError(f"file {name}: not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PackageError(f"file {name}: not a JSON object")
    return doc


def _listed(doc: dict[str, Any]) -> tuple[PackageFile, ...]:
    if doc.get("format") != FORMAT_VERSION or not isinstance(doc.get("files"), list):
        raise PackageError(f"file {CONTENT_LIST}: not a format {FORMAT_VERSION} content list")
    out = []
    for entry in doc["files"]:
        try:
            item = PackageFile(str(entry["path"]), str(entry["sha256"]), int(entry["size"]))
            check_package_path(item.path)
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise PackageError(f"file {CONTENT_LIST}: bad entry {entry!r}: {err}") from None
        out.append(item)
    paths = [f.path for f in out]
    if paths != sorted(set(paths)):
        raise PackageError(f"file {CONTENT_LIST}: paths not sorted or listed twice")
    return tuple(out)


def _entries(archive: zipfile.ZipFile) -> dict[str, bytes]:
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise PackageError(
            f"the archive lists {sorted({n for n in names if names.count(n) > 1})} twice"
        )
    if sum(i.file_size for i in infos) > MAX_PACKAGE_BYTES:
        raise PackageError(f"the archive unpacks to more than {MAX_PACKAGE_BYTES} bytes")
    for info in infos:
        if info.is_dir() or (info.external_attr >> 16) & 0o170000 not in (0, 0o100000):
            raise PackageError(f"file {info.filename}: not a regular file")
        if info.filename not in (CONTENT_LIST, SIGNATURE_FILE):
            try:
                check_package_path(info.filename)
            except ConfigError as err:
                raise PackageError(f"file {info.filename}: {err}") from None
    return {i.filename: archive.read(i) for i in infos}


def read_package(path: str | os.PathLike[str]) -> PackageContents:
    """Open a package archive and parse ``MANIFEST.json`` and ``SIGNATURE.json``.

    Raises
    ------
    PackageError
        The file is not a zip, an entry is unsafe (absolute path, ``..``, a link), or a fixed
        part is missing or malformed.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = _entries(archive)
    except (OSError, zipfile.BadZipFile) as err:
        raise PackageError(f"cannot read package {path}: {err}") from None
    for name in (CONTENT_LIST, SIGNATURE_FILE):
        if name not in data:
            raise PackageError(f"file {name}: missing from the archive {path.name}")
    content = data.pop(CONTENT_LIST)
    doc = _json(content, CONTENT_LIST)
    if canonical_json(doc) != content:
        raise PackageError(f"file {CONTENT_LIST}: not in canonical form")
    signature = _json(data.pop(SIGNATURE_FILE), SIGNATURE_FILE)
    try:
        cert = x509.load_pem_x509_certificate(str(signature["certificate"]).encode("ascii"))
    except (KeyError, ValueError, UnicodeEncodeError) as err:
        raise PackageError(
            f"file {SIGNATURE_FILE}: no readable signer certificate ({err})"
        ) from None
    package_hash = hashlib.sha256(content).hexdigest()
    name, version = str(doc.get("name")), str(doc.get("version"))
    return PackageContents(path, package_hash, name, version, _listed(doc), data, signature, cert)


def check_files(contents: PackageContents) -> None:
    """Every listed file present with its SHA-256 and size; none missing, none extra."""
    listed = {f.path: f for f in contents.listed}
    for name in sorted(contents.data):
        if name not in listed:
            raise PackageError(f"file {name}: in the archive but not listed in {CONTENT_LIST}")
    for name, entry in listed.items():
        if name not in contents.data:
            raise PackageError(
                f"file {name}: listed in {CONTENT_LIST} but missing from the archive"
            )
        raw = contents.data[name]
        if len(raw) != entry.size or hashlib.sha256(raw).hexdigest() != entry.sha256:
            raise PackageError(f"file {name}: SHA-256 differs from the manifest ({CONTENT_LIST})")


def check_signature(contents: PackageContents) -> None:
    """``SIGNATURE.json`` is for this package hash and verifies with its certificate."""
    sig = contents.signature
    if sig.get("algorithm") != SIGNATURE_ALGORITHM:
        raise PackageError(
            f"file {SIGNATURE_FILE}: algorithm {sig.get('algorithm')!r}, "
            f"expected {SIGNATURE_ALGORITHM!r}"
        )
    if sig.get("package_hash") != contents.hash:
        raise PackageError(
            f"signature does not verify: it is for package {sig.get('package_hash')!r}, "
            f"this package's hash is {contents.hash}"
        )
    verify_hash_signature(contents.certificate, contents.hash, str(sig.get("signature", "")))


def verify_package(
    path: str | os.PathLike[str],
    *,
    ca_cert: x509.Certificate,
    now: dt.datetime | None = None,
) -> VerifiedPackage:
    """Verify a package archive against the federation CA ``ca_cert`` (at ``now``, default
    the current time: the signer's certificate must be valid then).

    Raises
    ------
    PackageError
        A file added, missing or changed (names it), the signature does not verify, or the
        signer is not a researcher certified by ``ca_cert`` (names the signer).
    ConfigError
        The manifest inside is invalid (names the field).
    """
    contents = read_package(path)
    check_files(contents)
    check_signature(contents)
    signer = check_signer(contents.certificate, ca_cert, now=now)
    manifest = contents.manifest()
    if (manifest.name, manifest.version) != (contents.name, contents.version):
        raise PackageError(
            f"file {CONTENT_LIST}: names {contents.name} {contents.version}, but "
            f"{MANIFEST_FILE} says {manifest.name} {manifest.version}"
        )
    missing = sorted(set(manifest.data) - set(contents.data))
    if missing:
        raise PackageError(f"data files {missing}: declared in {MANIFEST_FILE} but not packaged")
    return VerifiedPackage(
        contents.hash, manifest, signer, contents.listed, contents.path, dict(contents.data)
    )
