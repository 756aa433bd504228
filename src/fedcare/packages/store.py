"""A content-addressed store of study packages on this machine.

Each package is kept as its verified files under ``ROOT/<hex>/`` (``<hex>`` is the package
hash: the SHA-256 of its ``MANIFEST.json``), with ``ROOT/<hex>.json`` saying where it came from
and who signed it. What runs is always the stored copy, never the folder or archive it was added
from, so editing a package folder after a study started changes nothing that study runs.

Packages enter the store two ways:

- :meth:`PackageStore.add_folder`: a researcher's own folder, unsigned (simulation: the study
  lead runs their own code). Its hash is the one ``fedcare package build`` would give it.
- :meth:`PackageStore.add_archive`: a signed ``.fcpkg`` archive, whose files and signature are
  verified first (and its signer against the federation CA when one is given).

The root is ``$FEDCARE_PACKAGE_CACHE``, else ``~/.cache/fedcare/packages``; a site keeps its
own under its state dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from fedcare.errors import ConfigError, PackageError
from fedcare.packages.archive import content_list, read_folder
from fedcare.packages.verify import check_files, check_signature, read_package, verify_package
from fedcare.records.package import PackageManifest, check_package_path

__all__ = ["CACHE_ENV", "PackageStore", "hash_hex", "hash_ref"]

#: Environment variable naming the default store's root.
CACHE_ENV = "FEDCARE_PACKAGE_CACHE"
_HEX = re.compile(r"[0-9a-f]{64}")


def hash_hex(ref: str) -> str:
    """The 64 hex digits of a package hash written ``sha256:<hex>`` or bare; ConfigError else."""
    text = ref.removeprefix("sha256:") if isinstance(ref, str) else ""
    if not _HEX.fullmatch(text):
        raise ConfigError(f"package hash {ref!r} is not 'sha256:' and 64 lowercase hex digits")
    return text


def hash_ref(ref: str) -> str:
    """A package hash in the form specs carry: ``sha256:<hex>``."""
    return f"sha256:{hash_hex(ref)}"


def _default_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "fedcare" / "packages"


class PackageStore:
    """Verified study packages by hash, under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else _default_root()

    def has(self, ref: str) -> bool:
        """Whether the package ``ref`` (``sha256:<hex>`` or hex) is stored here."""
        hex_ = hash_hex(ref)
        return (self.root / f"{hex_}.json").is_file() and (self.root / hex_).is_dir()

    def folder(self, ref: str) -> Path:
        """The folder holding the stored package's files; PackageError when it is not stored."""
        if not self.has(ref):
            raise PackageError(
                f"package {hash_ref(ref)} is not in the package store {self.root}; add its "
                "folder or signed archive first (a study file names it by path)"
            )
        return self.root / hash_hex(ref)

    def info(self, ref: str) -> dict[str, Any]:
        """Where the stored package came from: ``source``, ``signer`` (a researcher id or None)."""
        self.folder(ref)
        doc: dict[str, Any] = json.loads((self.root / f"{hash_hex(ref)}.json").read_text())
        return doc

    def manifest(self, ref: str) -> PackageManifest:
        """The stored package's ``fedcare-package.yaml``, validated."""
        return PackageManifest.from_folder(self.folder(ref))

    def add_folder(self, folder: str | os.PathLike[str]) -> str:
        """Store an (unsigned) package folder's files; returns ``sha256:<hex>``.

        Raises
        ------
        ConfigError
            The folder is no package (no or a bad manifest, a symlink, a missing data file).
        """
        src = Path(folder)
        if not src.is_dir():
            raise ConfigError(f"package folder {src} does not exist")
        manifest, files = read_folder(src)
        hex_ = hashlib.sha256(content_list(manifest, files)).hexdigest()
        self._put(hex_, files, {"source": str(src.resolve()), "signer": None})
        return f"sha256:{hex_}"

    def add_archive(
        self, path: str | os.PathLike[str], *, ca_cert: x509.Certificate | None = None
    ) -> str:
        """Verify a signed archive and store its files; returns ``sha256:<hex>``.

        Its files and signature are always checked; its signer is checked against ``ca_cert``
        (the federation CA) when given.

        Raises
        ------
        PackageError
            A file added, missing or changed, a signature that does not verify, a signer the
            CA did not certify (each named).
        """
        if ca_cert is not None:
            verified = verify_package(path, ca_cert=ca_cert)
            hex_, data, signer = verified.hash, verified.data, verified.signer.researcher_id
        else:
            contents = read_package(path)
            check_files(contents)
            check_signature(contents)
            contents.manifest()
            hex_, data, signer = contents.hash, contents.data, None
        meta = {"source": str(Path(path).resolve()), "signer": signer}
        self._put(hex_, data, meta)
        return f"sha256:{hex_}"

    def _put(self, hex_: str, files: Mapping[str, bytes], meta: dict[str, Any]) -> None:
        if self.has(hex_):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{hex_[:12]}."))
        tmp.chmod(0o755)  # readable by the sandboxed runner's user (nobody), like its files
        try:
            for name, data in files.items():
                target = tmp / check_package_path(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            final = self.root / hex_
            if final.exists():  # a half-written earlier attempt (no .json): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        doc = json.dumps({"hash": f"sha256:{hex_}", **meta}, sort_keys=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=f".{hex_[:12]}.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            fh.write(doc)
        os.replace(name, self.root / f"{hex_}.json")
