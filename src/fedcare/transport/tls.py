"""Mutual TLS for the gRPC transport: load a startup kit, build credentials, identify callers.

**Identity.** The coordinator's server credentials require a client certificate chained to the
federation CA (``require_client_auth=True``), so the TLS handshake already refuses a client with
no certificate or one from another CA. Inside every RPC, :func:`peer_identity` reads the
verified client certificate from ``context.auth_context()`` (``x509_pem_cert``), takes the site
id from it (CN and SAN URI ``fedcare://site/<id>`` must agree, see
:func:`fedcare.transport.certs.site_identity`) and checks its serial against the coordinator's
``revoked.json``; a revoked certificate or one without a site identity ends the call with
``UNAUTHENTICATED``. The id it returns is the only site id the coordinator may trust: a
``site_id`` inside a message must equal it, so site A cannot pull B's tasks or reply as B.
:class:`RequireSiteIdentity` applies the same check to every method of a server, so a handler
that forgets it still cannot be reached by a revoked or unidentified caller.

**Revocation.** :class:`RevocationList` re-reads ``revoked.json`` whenever its modification
time, size or inode changes (provisioning replaces it atomically), so a site revoked while the
coordinator runs is refused from its next call. A missing or unreadable list refuses every
call (``INTERNAL``): the coordinator fails closed.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fedcare.errors import AuthenticationError, ConfigError, FedcareError
from fedcare.transport.certs import site_identity
from fedcare.transport.revocations import Revocation, read_revocations

__all__ = [
    "KIT_FILES",
    "Kit",
    "RequireSiteIdentity",
    "RevocationList",
    "channel_credentials",
    "identify_peer",
    "load_kit",
    "peer_identity",
    "server_credentials",
]

KIT_FILES = ("ca.pem", "cert.pem", "key.pem", "kit.yaml")


@dataclass(frozen=True)
class Kit:
    """A startup kit, read and checked by :func:`load_kit`."""

    path: Path
    role: str
    #: The site id for a site kit (as certified), ``"coordinator"`` for the coordinator's.
    identity: str
    federation: str
    #: ``host:port`` of the coordinator (``kit.yaml``'s ``coordinator``); may be empty.
    coordinator_address: str
    serial: int
    expires: dt.datetime
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = yaml.safe_load((folder / "kit.yaml").read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{folder / 'kit.yaml'} is not valid YAML: {err}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{folder / 'kit.yaml'} must be a mapping")
    for key in ("role", "id", "federation", "serial"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ConfigError(f"{folder / 'kit.yaml'} lacks the field {key!r}")
    if meta["role"] not in ("coordinator", "site"):
        raise ConfigError(f"{folder / 'kit.yaml'} has role {meta['role']!r}")
    return meta


def _check_key_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")


def _check_pair(folder: Path, ca: x509.Certificate, cert: x509.Certificate, key: Any) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise ConfigError(f"{folder / 'cert.pem'} is not signed by {folder / 'ca.pem'}") from err
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise ConfigError(f"{folder / 'key.pem'} does not belong to {folder / 'cert.pem'}")
    expires = cert.not_valid_after_utc
    if expires <= dt.datetime.now(dt.timezone.utc):
        raise ConfigError(f"{folder / 'cert.pem'} expired on {expires:%Y-%m-%d %H:%M} UTC")


def _check_meta(folder: Path, meta: dict[str, Any], cert: x509.Certificate) -> None:
    if format(cert.serial_number, "x") != meta["serial"]:
        raise ConfigError(f"{folder / 'kit.yaml'} names serial {meta['serial']}, not cert.pem's")
    if meta["role"] == "site":
        try:
            certified = site_identity(cert)
        except AuthenticationError as err:
            raise ConfigError(f"{folder / 'cert.pem'}: {err}") from None
        if certified != meta["id"]:
            raise ConfigError(
                f"{folder / 'kit.yaml'} names site {meta['id']!r} but cert.pem is {certified!r}'s"
            )


def load_kit(kit_dir: str | os.PathLike[str]) -> Kit:
    """Read a startup kit and check it is complete and consistent.

    Raises
    ------
    ConfigError
        Naming the problem: the folder or a file is missing (names it), ``key.pem`` is
        readable by others, a file does not parse, the certificate is not signed by the kit's
        CA, the key does not match it, it has expired, or ``kit.yaml`` disagrees with it.
    """
    folder = Path(kit_dir)
    if not folder.is_dir():
        raise ConfigError(f"startup kit folder {folder} does not exist")
    missing = [name for name in KIT_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"startup kit {folder} is missing {', '.join(missing)}")
    _check_key_mode(folder / "key.pem")
    meta = _read_meta(folder)
    files = {name: (folder / name).read_bytes() for name in ("ca.pem", "cert.pem", "key.pem")}
    try:
        ca = x509.load_pem_x509_certificate(files["ca.pem"])
        cert = x509.load_pem_x509_certificate(files["cert.pem"])
        key = serialization.load_pem_private_key(files["key.pem"], password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"startup kit {folder} has an unreadable PEM file: {err}") from None
    _check_pair(folder, ca, cert, key)
    _check_meta(folder, meta, cert)
    return Kit(
        path=folder,
        role=meta["role"],
        identity=meta["id"],
        federation=meta["federation"],
        coordinator_address=str(meta.get("coordinator", "")),
        serial=cert.serial_number,
        expires=cert.not_valid_after_utc,
        ca_pem=files["ca.pem"],
        cert_pem=files["cert.pem"],
        key_pem=files["key.pem"],
    )


def server_credentials(kit_dir: str | os.PathLike[str]) -> grpc.ServerCredentials:
    """TLS credentials for the coordinator: its certificate, and client certificates required.

    Raises
    ------
    ConfigError
        If the kit is invalid or not the coordinator's.
    """
    kit = load_kit(kit_dir)
    if kit.role != "coordinator":
        raise ConfigError(f"startup kit {kit.path} is a {kit.role} kit, not the coordinator's")
    return grpc.ssl_server_credentials(
        [(kit.key_pem, kit.cert_pem)], root_certificates=kit.ca_pem, require_client_auth=True
    )


def channel_credentials(kit_dir: str | os.PathLike[str]) -> grpc.ChannelCredentials:
    """TLS credentials for a site: trust only the federation CA, present the site certificate.

    Raises
    ------
    ConfigError
        If the kit is invalid.
    """
    kit = load_kit(kit_dir)
    return grpc.ssl_channel_credentials(
        root_certificates=kit.ca_pem, private_key=kit.key_pem, certificate_chain=kit.cert_pem
    )


class RevocationList:
    """The coordinator's ``revoked.json``, re-read when the file changes. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[int, Revocation] = {}
        self.refresh()

    @classmethod
    def from_kit(cls, kit_dir: str | os.PathLike[str]) -> RevocationList:
        """The revocation list of a coordinator kit (``<kit_dir>/revoked.json``)."""
        return cls(Path(kit_dir) / "revoked.json")

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when it did.

        Raises
        ------
        ConfigError
            If the file is missing or invalid (callers must then refuse, not accept).
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ConfigError(f"revocation list {self.path} is missing") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return False
            self._entries = {e.serial: e for e in read_revocations(self.path)}
            self._stamp = stamp
            return True

    def lookup(self, serial: int) -> Revocation | None:
        """The revocation of ``serial`` (after a refresh), or None if it is not revoked."""
        self.refresh()
        return self._entries.get(serial)

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, int) and self.lookup(serial) is not None

    def __len__(self) -> int:
        self.refresh()
        return len(self._entries)


def identify_peer(auth_context: Mapping[str, Sequence[bytes]], revocations: RevocationList) -> str:
    """The site id of the caller described by a gRPC ``auth_context``.

    Raises
    ------
    AuthenticationError
        If there is no client certificate, it lacks a site identity, or it is revoked.
    ConfigError
        If the revocation list cannot be read.
    """
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        raise AuthenticationError("the caller presented no client certificate")
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError as err:
        raise AuthenticationError(f"the caller's certificate cannot be read: {err}") from None
    site_id = site_identity(cert)
    entry = revocations.lookup(cert.serial_number)
    if entry is not None:
        raise AuthenticationError(
            f"the certificate of site {site_id!r} (serial {cert.serial_number:x}) was "
            f"{entry.reason} at {entry.revoked_at}; it is no longer accepted"
        )
    return site_id


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AuthenticationError(message)  # abort raises; this line only satisfies the type


def peer_identity(context: grpc.ServicerContext, revocations: RevocationList) -> str:
    """The site id of the caller of the current RPC, or the call ends ``UNAUTHENTICATED``.

    Call it first in every RPC handler, then require any ``site_id`` in the request to equal
    the returned id. A revocation list that cannot be read ends the call with ``INTERNAL``.
    """
    try:
        return identify_peer(context.auth_context(), revocations)
    except AuthenticationError as err:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(err))
    except ConfigError as err:
        _abort(context, grpc.StatusCode.INTERNAL, f"cannot check revocations: {err}")


_Behavior = Callable[[Any, grpc.ServicerContext], Any]


class RequireSiteIdentity(grpc.ServerInterceptor):
    """A server interceptor that runs :func:`peer_identity` before every method."""

    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations

    def _guard(self, behavior: _Behavior) -> _Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            peer_identity(context, self.revocations)
            return behavior(request, context)

        return guarded

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attr, make in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                return make(
                    self._guard(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        raise FedcareError(f"unknown gRPC handler kind for {details.method}")
