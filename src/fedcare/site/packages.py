"""A site's study packages: fetched by hash, verified, checked against the site's policy.

Before a task whose plan's model is ``kind: package`` goes on to the steward's approval (and
then to the worker), :func:`package_mod` makes sure the site holds that exact package and may
run it:

1. the archive is taken from the site's cache (``STATE/packages/archives/<hex>.fcpkg``), or
   fetched from the coordinator by hash (the ``FetchPackage`` RPC, :func:`grpc_fetcher`) —
   ``package-unavailable`` when that fails;
2. it is verified: every file against ``MANIFEST.json``, the signature, the signer certified by
   the federation CA of the site's kit, its hash equal to the one the plan names, its name,
   version and task those of the plan — ``package-invalid`` with the reason otherwise (a
   fetched archive that fails is never kept);
3. its signer is one the site's policy trusts (``packages: {trusted_signers: [researcher
   ids]}``; none by default, so every package is refused until the steward names whom to
   trust) — ``package-signer-untrusted``, naming the signer;
4. every dependency the manifest declares is installed here at a version in its range —
   ``package-dependencies``, naming each (``torch>=2.0 (not installed)``, ``numpy<2
   (installed 2.1.0)``).

A verified archive's files are extracted into the site's package store (``STATE/packages``,
:class:`fedcare.packages.store.PackageStore`), where the sandboxed worker loads them; before
every task the extracted files are compared with the verified archive (and extracted again if
they were changed). The
agent only fetches, verifies and reads manifests and file bytes: no package code runs in it.
It also notes which package each plan hash names (``STATE/packages/plans/<plan hash>``), so
the steward's review (``fedcare site plan``) can diff a new version against the last one
approved.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from fedcare.errors import ConfigError, PackageError, TransportError, ValidationError
from fedcare.packages.dependencies import dependency_problems
from fedcare.packages.resolve import is_package_model
from fedcare.packages.store import PackageStore, hash_hex, hash_ref
from fedcare.packages.verify import (
    MAX_PACKAGE_BYTES,
    VerifiedPackage,
    read_package,
    verify_package,
)
from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler, Mod
from fedcare.site.mods import refuse_task
from fedcare.site.plans import Refusal
from fedcare.site.policy import SitePolicy

__all__ = [
    "PACKAGES_DIR",
    "SitePackages",
    "check_package",
    "describe_plan_package",
    "grpc_fetcher",
    "package_mod",
    "package_of_plan",
]

PACKAGES_DIR = "packages"
#: Largest archive accepted from the coordinator (its files unpack to MAX_PACKAGE_BYTES).
MAX_ARCHIVE_BYTES = MAX_PACKAGE_BYTES + (16 << 20)
FETCH_TIMEOUT_S = 600.0
Fetcher = Callable[[str], bytes]


class SitePackages:
    """The site's package cache under ``STATE/packages`` (see the module docstring)."""

    def __init__(
        self, state_dir: Path, ca_cert: x509.Certificate, fetch: Fetcher | None = None
    ) -> None:
        self.root = Path(state_dir) / PACKAGES_DIR
        self.store = PackageStore(self.root)
        self.ca_cert = ca_cert
        #: ``fetch("sha256:<hex>") -> archive bytes``; set by the agent to its connection.
        self.fetch = fetch

    @classmethod
    def for_kit(cls, state_dir: Path, kit_dir: Path) -> SitePackages:
        """The cache of the site whose kit (and federation CA, ``ca.pem``) is ``kit_dir``."""
        try:
            ca = x509.load_pem_x509_certificate((Path(kit_dir) / "ca.pem").read_bytes())
        except (OSError, ValueError) as err:
            raise ConfigError(f"the federation CA {kit_dir}/ca.pem cannot be read: {err}") from None
        return cls(state_dir, ca)

    def archive_path(self, ref: str) -> Path:
        return self.root / "archives" / f"{hash_hex(ref)}.fcpkg"

    def obtain(self, ref: str) -> VerifiedPackage:
        """The verified package ``ref``, fetched first if the cache lacks it.

        Raises
        ------
        TransportError
            If it had to be fetched and could not be.
        PackageError, ConfigError
            If it does not verify (not kept), or its hash is not ``ref``'s.
        """
        path = self.archive_path(ref)
        if path.is_file():
            verified = self._verify(path, ref)
        else:
            if self.fetch is None:
                raise TransportError("this site is not connected to a coordinator to fetch it")
            verified = self._keep(self.fetch(hash_ref(ref)), ref)
        if not (self.store.has(ref) and self._extracted_intact(verified)):
            self._drop_extracted(ref)
            self.store.add_archive(path, ca_cert=self.ca_cert)
        return verified

    def _extracted_intact(self, verified: VerifiedPackage) -> bool:
        """Whether the extracted files (what the worker loads) are exactly the verified ones."""
        folder = self.store.folder(verified.hash)
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        if present != {f.path for f in verified.files}:
            return False
        return all(
            hashlib.sha256((folder / f.path).read_bytes()).hexdigest() == f.sha256
            for f in verified.files
        )

    def _drop_extracted(self, ref: str) -> None:
        """Remove the extracted copy of ``ref`` (changed on disk): extracted again from the
        verified archive."""
        hex_ = hash_hex(ref)
        (self.root / f"{hex_}.json").unlink(missing_ok=True)
        shutil.rmtree(self.root / hex_, ignore_errors=True)

    def add_archive(self, archive: Path) -> VerifiedPackage:
        """Verify a package archive given by hand (a steward's review) and keep it.

        Raises
        ------
        PackageError, ConfigError
            If it does not verify (it is not kept).
        """
        ref = read_package(archive).hash  # the hash it claims: verified before it is kept
        if not self.archive_path(ref).is_file():
            self._keep(Path(archive).read_bytes(), ref)
        return self.obtain(ref)

    def _keep(self, data: bytes, ref: str) -> VerifiedPackage:
        """Verify ``data`` as the archive of ``ref`` and keep it in the cache (atomically)."""
        path = self.archive_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            verified = self._verify(Path(tmp), ref)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return verified

    def _verify(self, path: Path, ref: str) -> VerifiedPackage:
        verified = verify_package(path, ca_cert=self.ca_cert)
        if verified.hash != hash_hex(ref):
            raise PackageError(
                f"the archive for package {hash_ref(ref)} holds package sha256:{verified.hash}"
            )
        return verified

    def remember_plan(self, plan_hash: str, ref: str) -> None:
        """Note that plan ``plan_hash`` runs package ``ref`` (for the steward's review)."""
        if not plan_hash or not plan_hash.isalnum():
            return
        folder = self.root / "plans"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan.")
        with os.fdopen(fd, "w") as fh:
            fh.write(hash_ref(ref) + "\n")
        os.replace(tmp, folder / plan_hash)

    def package_of_plan(self, plan_hash: str) -> str | None:
        """The package (``sha256:<hex>``) plan ``plan_hash`` ran, if this site noted it."""
        return package_of_plan(self.root.parent, plan_hash)


def package_of_plan(state_dir: Path, plan_hash: str) -> str | None:
    """The package (``sha256:<hex>``) the site noted plan ``plan_hash`` runs, if any."""
    path = Path(state_dir) / PACKAGES_DIR / "plans" / plan_hash
    if not plan_hash.isalnum() or not path.is_file():
        return None
    return path.read_text().strip() or None


def describe_plan_package(state_dir: Path, plan_hash: str) -> str | None:
    """``name version (sha256:<hex>)`` of the package plan ``plan_hash`` runs, if noted."""
    ref = package_of_plan(state_dir, plan_hash)
    if ref is None:
        return None
    store = PackageStore(Path(state_dir) / PACKAGES_DIR)
    if not store.has(ref):
        return ref
    manifest = store.manifest(ref)
    return f"{manifest.name} {manifest.version} ({ref})"


def check_package(
    packages: SitePackages | None, policy: SitePolicy, spec: Mapping[str, Any], plan_hash: str = ""
) -> VerifiedPackage | Refusal:
    """The verified package a plan's model ``spec`` names, if the site may run it; else the
    :class:`~fedcare.site.plans.Refusal` (see the module docstring for the order)."""
    ref = spec.get("package")
    try:
        hash_hex(str(ref))
    except ConfigError as err:
        return Refusal("package-invalid", f"the plan's model names no package hash: {err}")
    ref = hash_ref(str(ref))
    if packages is None:
        return Refusal("package-unavailable", f"package {ref}: this site keeps no package cache")
    try:
        verified = packages.obtain(ref)
    except TransportError as err:
        return Refusal(
            "package-unavailable", f"package {ref} could not be fetched from the coordinator: {err}"
        )
    except (PackageError, ConfigError) as err:
        return Refusal("package-invalid", f"package {ref} does not verify: {err}")
    except OSError as err:  # the site's own cache: a full disk, a permission
        return Refusal(
            "package-unavailable", f"package {ref}: the site's package cache failed: {err}"
        )
    with contextlib.suppress(OSError):  # only the steward's review reads it
        packages.remember_plan(plan_hash, ref)
    manifest = verified.manifest
    named = f"package {manifest.name} {manifest.version} ({ref})"
    for key in ("name", "version", "task"):
        if spec.get(key) != getattr(manifest, key):
            return Refusal(
                "package-invalid",
                f"{named}: the plan gives its {key} as {spec.get(key)!r}, its manifest "
                f"{getattr(manifest, key)!r}",
            )
    signer = verified.signer
    trusted = policy.packages.trusted_signers
    if signer.researcher_id not in trusted:
        return Refusal(
            "package-signer-untrusted",
            f"{named} is signed by researcher {signer.researcher_id!r} ({signer.subject}), "
            f"whom this site's policy does not trust (packages.trusted_signers: "
            f"{', '.join(trusted) or 'none'})",
        )
    missing = dependency_problems(manifest)
    if missing:
        return Refusal(
            "package-dependencies",
            f"{named} needs what this site does not have installed: {'; '.join(missing)}",
        )
    return verified


def package_mod(packages: SitePackages | None, policy: SitePolicy, audit: Any) -> Mod:
    """Refuse a task whose package is unavailable, invalid, untrusted or unrunnable here."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        spec = task.plan.get("model") if task.kind != "analytics" else None
        if not isinstance(spec, Mapping) or not is_package_model(spec):
            return next_handler(task)
        checked = check_package(packages, policy, spec, str(task.plan.get("plan_hash", "")))
        if isinstance(checked, Refusal):
            return refuse_task(audit, task, checked)
        audit.append(
            "package-verified",
            task_id=task.task_id,
            package=f"sha256:{checked.hash}",
            name=checked.manifest.name,
            version=checked.manifest.version,
            signer=checked.signer.researcher_id,
        )
        return next_handler(task)

    return mod


def grpc_fetcher(stub: Callable[[], Any]) -> Fetcher:
    """A fetcher over the agent's current connection (``stub()``: its CoordinatorStub, or None
    between connections); every failure is a :class:`~fedcare.errors.TransportError`."""

    def fetch(ref: str) -> bytes:
        import grpc

        from fedcare.transport.codec import assemble
        from fedcare.transport.grpc import fedcare_pb2 as pb

        current = stub()
        if current is None:
            raise TransportError("not connected to the coordinator")
        try:
            chunks = current.FetchPackage(
                pb.FetchPackageRequest(package=ref), timeout=FETCH_TIMEOUT_S
            )
            return assemble(chunks, max_bytes=MAX_ARCHIVE_BYTES)
        except grpc.RpcError as err:
            raise TransportError(f"{err.code().name}: {err.details()}") from None
        except ValidationError as err:
            raise TransportError(f"the transfer failed: {err}") from None
        except ValueError as err:  # the session's channel was closed
            raise TransportError(f"not connected to the coordinator ({err})") from None

    return fetch
