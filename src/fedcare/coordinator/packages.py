"""The coordinator's package store: signed study packages, by hash, for the sites to fetch.

``fedcare study submit`` puts a study's package here (:func:`store_study_package`): a study
file whose ``model.package`` names a ``.fcpkg`` archive (a path relative to the study file)
has it verified against the federation CA (files, signature, signer certified by the CA as a
researcher), copied to ``HOME/packages/<hex>.fcpkg`` (``<hex>``: the package hash, the SHA-256
of its ``MANIFEST.json``; written to a temporary file, verified there, then renamed, so a
reader never sees half a file and what is stored is exactly what was verified), and the
stored study names it ``sha256:<hex>`` with the manifest's name, version, task and
requirements (:func:`fedcare.packages.resolve.resolve_package_model`; the verified files are
kept beside the archive, ``HOME/packages/<hex>/``, a
:class:`~fedcare.packages.store.PackageStore`). A ``sha256:`` reference must already be stored;
a package *folder* is refused: a deployment runs only signed archives (``fedcare package
build``).

Sites fetch an archive by hash with the ``FetchPackage`` RPC (only stored hashes, only to
authenticated, registered sites) and verify it themselves: the coordinator is not trusted to
have kept it intact. No package code runs at the coordinator.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509

from fedcare.coordinator.files import FILE_MODE, private_dir, recorded_kit
from fedcare.errors import ConfigError, NotFoundError, PackageError
from fedcare.packages.resolve import is_package_model, resolve_package_model
from fedcare.packages.store import PackageStore, hash_hex, hash_ref
from fedcare.packages.verify import verify_package
from fedcare.records.study import StudyConfig

__all__ = ["PACKAGES_DIR", "CoordinatorPackages", "federation_ca", "store_study_package"]

#: The folder of the coordinator's home holding the stored archives.
PACKAGES_DIR = "packages"
ARCHIVE_SUFFIX = ".fcpkg"


class CoordinatorPackages:
    """Verified package archives under ``HOME/packages``, named ``<hex>.fcpkg``."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / PACKAGES_DIR

    def path(self, ref: str) -> Path:
        """Where the archive of ``ref`` (``sha256:<hex>`` or hex) is (or would be) kept."""
        return self.root / f"{hash_hex(ref)}{ARCHIVE_SUFFIX}"

    def has(self, ref: str) -> bool:
        return self.path(ref).is_file()

    def files(self) -> PackageStore:
        """The stored packages' verified files and manifests (``HOME/packages/<hex>/``), as a
        :class:`~fedcare.packages.store.PackageStore` beside the archives."""
        return PackageStore(self.root)

    def read(self, ref: str) -> bytes:
        """The stored archive's bytes.

        Raises
        ------
        NotFoundError
            If no archive with that hash is stored here.
        """
        path = self.path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"package {hash_ref(ref)} is not stored at this coordinator"
            ) from None

    def add_archive(self, archive: Path, *, ca_cert: x509.Certificate) -> tuple[str, Any]:
        """Verify ``archive`` against ``ca_cert`` and store it; returns (``sha256:<hex>``, the
        :class:`~fedcare.packages.verify.VerifiedPackage`).

        Raises
        ------
        PackageError
            A changed, missing or extra file, a signature that does not verify, a signer the
            federation CA did not certify (the message names which).
        ConfigError
            If ``archive`` cannot be read, or its manifest is invalid.
        """
        try:
            data = Path(archive).read_bytes()
        except OSError as err:
            raise ConfigError(f"package archive {archive} cannot be read: {err}") from None
        return self.add_bytes(data, ca_cert=ca_cert, name=str(archive))

    def add_bytes(
        self, data: bytes, *, ca_cert: x509.Certificate, name: str = "the uploaded archive"
    ) -> tuple[str, Any]:
        """Verify the archive ``data`` (an upload to the HTTP API) against ``ca_cert`` and
        store it, as :meth:`add_archive` does a file; ``name`` names it in a refusal.

        Raises
        ------
        PackageError
            As :meth:`add_archive`: ``package NAME: <why it does not verify>``.
        ConfigError
            If its manifest is invalid.
        """
        private_dir(self.root)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming.", suffix=ARCHIVE_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, FILE_MODE)
            try:
                verified = verify_package(tmp, ca_cert=ca_cert)
            except PackageError as err:
                raise PackageError(f"package {name}: {err}") from None
            os.replace(tmp, self.path(verified.hash))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hash_ref(verified.hash), verified


def federation_ca(home: Path) -> x509.Certificate:
    """The federation CA of the coordinator whose home is ``home`` (its recorded kit's
    ``ca.pem``, :func:`fedcare.coordinator.files.recorded_kit`).

    Raises
    ------
    ConfigError
        If the home names no kit (the coordinator never started there) or its CA is unreadable.
    """
    kit = recorded_kit(home)
    if kit is None:
        raise ConfigError(
            f"{home} names no coordinator kit (kit-path): start the coordinator there once, "
            "so package signatures can be checked against its federation CA"
        )
    try:
        return x509.load_pem_x509_certificate((kit / "ca.pem").read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"the federation CA {kit / 'ca.pem'} cannot be read: {err}") from None


def store_study_package(study: StudyConfig, study_file: Path, home: Path) -> StudyConfig:
    """``study`` with its package stored at the coordinator and named by hash.

    The model spec is resolved by :func:`fedcare.packages.resolve.resolve_package_model`
    against the coordinator's store (so it is the spec a simulation or a steward's review of
    the same archive gives, and the plan hash is the same). A study whose model is not
    ``kind: package`` is returned as it is.

    Raises
    ------
    PackageError
        The archive does not verify (the message says why), or a ``sha256:`` reference that is
        not stored here.
    ConfigError
        ``model.package`` missing, a folder (a deployment runs signed archives only: build and
        sign it with ``fedcare package build``), no such file, or a bad spec key or option.
    """
    model = study.model
    if not is_package_model(model):
        return study
    ref = model.get("package")
    if not isinstance(ref, str) or not ref:
        raise ConfigError(
            f"{study_file}: model.package must name a signed package archive (.fcpkg) or "
            f"a stored package hash (sha256:<hex>), got {ref!r}"
        )
    store = CoordinatorPackages(home)
    ca = federation_ca(home)
    if ref.startswith("sha256:"):
        if not store.has(ref):
            raise PackageError(
                f"{study_file}: model.package {ref} is not stored at this coordinator; name "
                "the signed archive (.fcpkg) in the study file to store it"
            )
        try:
            verify_package(store.path(ref), ca_cert=ca)
        except PackageError as err:
            raise PackageError(f"stored package {hash_ref(ref)}: {err}") from None
        digest = hash_ref(ref)
    else:
        path = Path(ref) if Path(ref).is_absolute() else Path(study_file).parent / ref
        if path.is_dir():
            raise ConfigError(
                f"{study_file}: model.package {ref} is a package folder; a deployment runs "
                f"only signed archives: build and sign it first (`fedcare package build {ref} "
                "--kit RESEARCHER_KIT --out NAME.fcpkg`) and name the .fcpkg file"
            )
        if not path.is_file():
            raise ConfigError(f"{study_file}: model.package {ref}: no such file ({path})")
        digest, _ = store.add_archive(path, ca_cert=ca)
    files = store.files()
    files.add_archive(store.path(digest), ca_cert=ca)
    return study.model_copy(
        update={"model": resolve_package_model({**model, "package": digest}, files)}
    )
