"""Why a site cannot work with its coordinator, in one line an operator can act on.

The site agent (:mod:`fedcare.site.agent`) calls :func:`explain_failure` when a gRPC call
fails, and ``fedcare site doctor`` runs the same checks on demand; both name one cause:

=============================  ==================================================================
cause (:class:`Cause.kind`)    message
=============================  ==================================================================
``name-resolution``            name resolution failed for HOST
``refused``                    connection refused at HOST:PORT (is the coordinator running?)
``timeout``                    timeout: no answer from HOST:PORT within N s
``unreachable``                cannot reach HOST:PORT: <the system's reason>
``tls-verification``           TLS verification failed: the coordinator's certificate is not
                               signed by this kit's CA (<CA subject>, federation NAME) —
                               probably another federation's kit
``tls-refused``                the coordinator refused this site's certificate at the TLS
                               handshake (<alert>)
``revoked`` / ``rotated``      the coordinator refused site 'X': its certificate serial S is
                               revoked (or was replaced by a rotation)
``refused-site``               the coordinator refused site 'X': <its reason>
``lost``                       anything else: gRPC's status and first line of its details
=============================  ==================================================================

gRPC's own error text hints at the cause ("DNS resolution failed", "Connection refused",
"CERTIFICATE_VERIFY_FAILED"); for certainty :func:`diagnose` repeats the connection with the
standard library (``socket.getaddrinfo``, ``socket.create_connection``, an ``ssl`` handshake
with the kit's CA, certificate and key, ALPN ``h2``), each step bounded by a short timeout, and
reads the coordinator's certificate to say whose CA signed it. This module needs no gRPC.

:func:`load_site_kit` is the agent's start-up check: the kit's files exist and parse, it is a
*site* kit (the coordinator's kit is refused by name), its certificate is signed by its CA, not
expired, and its key matches (:func:`fedcare.transport.tls.load_kit`).
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedcare.errors import ConfigError
from fedcare.transport.tls import KIT_FILES, Kit, load_kit

__all__ = [
    "Cause",
    "Unreachable",
    "check_kit_files",
    "connect",
    "diagnose",
    "explain_failure",
    "explain_refusal",
    "load_site_kit",
    "resolve",
    "split_address",
    "tls_handshake",
]

#: Causes a retry soon cannot fix (the operator must change a kit, DNS or an address).
PERSISTENT = frozenset({"name-resolution", "tls-verification", "tls-refused"})
#: The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
#: OpenSSL verify codes meaning "the certificate is not for the host dialled".
_NAME_MISMATCH = (62, 64)
_EXPIRED = 10


@dataclass(frozen=True)
class Cause:
    """Why a connection failed: a short ``kind`` (see the module table) and one line."""

    kind: str
    message: str

    @property
    def persistent(self) -> bool:
        """True when retrying soon cannot help (the agent then retries slowly)."""
        return self.kind in PERSISTENT


# Kit -----------------------------------------------------------------------------------------
def check_kit_files(kit_dir: str | os.PathLike[str]) -> str:
    """Check that ``kit_dir`` holds a site kit's files and that ``kit.yaml`` says ``site``.

    Returns the site id ``kit.yaml`` names.

    Raises
    ------
    ConfigError
        Naming the missing folder or files, an unreadable ``kit.yaml``, or the wrong role
        (the coordinator's kit: "use kits/sites/<site>/").
    """
    folder = Path(kit_dir)
    if not folder.is_dir():
        raise ConfigError(f"startup kit folder {folder} does not exist")
    missing = [name for name in KIT_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"startup kit {folder} is missing {', '.join(missing)}")
    try:
        meta = yaml.safe_load((folder / "kit.yaml").read_text())
    except (yaml.YAMLError, OSError) as err:
        raise ConfigError(f"{folder / 'kit.yaml'} cannot be read: {err}") from None
    role = meta.get("role") if isinstance(meta, dict) else None
    if role == "coordinator":
        raise ConfigError(
            f"{folder} is the coordinator's kit, not a site kit; use kits/sites/<site>/"
        )
    if role != "site":
        raise ConfigError(f"{folder / 'kit.yaml'} has role {role!r}; a site kit has role 'site'")
    return str(meta.get("id", ""))


def load_site_kit(kit_dir: str | os.PathLike[str]) -> Kit:
    """A site's kit, checked as :func:`check_kit_files` and :func:`~fedcare.transport.tls.load_kit`
    do (certificate signed by the kit's CA, not expired, key matching).

    Raises
    ------
    ConfigError
        Naming the problem.
    """
    check_kit_files(kit_dir)
    return load_kit(kit_dir)


# Network checks ----------------------------------------------------------------------------------
class Unreachable(Exception):
    """A network check failed; ``cause`` says why (as the agent logs it)."""

    def __init__(self, cause: Cause) -> None:
        super().__init__(cause.message)
        self.cause = cause


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``.

    Raises
    ------
    ConfigError
        If ``address`` has no numeric port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"coordinator address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def resolve(host: str, port: int) -> list[tuple[int, Any]]:
    """``(family, sockaddr)`` of every address of ``host``; Unreachable if it has none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        why = getattr(err, "strerror", None) or str(err)
        cause = Cause("name-resolution", f"name resolution failed for {host} ({why})")
        raise Unreachable(cause) from None
    return [(family, sockaddr[:2]) for family, _, _, _, sockaddr in infos]


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` (the first address that answers)."""
    where = f"{host}:{port}"
    cause: Cause | None = None
    for family, sockaddr in resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except ConnectionRefusedError:
            cause = Cause("refused", f"connection refused at {where} (is the coordinator running?)")
        except TimeoutError:
            cause = cause or Cause(
                "timeout", f"timeout: no answer from {where} within {timeout:g} s"
            )
        except OSError as err:
            cause = cause or Cause("unreachable", f"cannot reach {where}: {err.strerror or err}")
        sock.close()
    raise Unreachable(cause or Cause("name-resolution", f"name resolution failed for {host}"))


def _certificate(pem_or_der: bytes) -> x509.Certificate:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der)
    return x509.load_der_x509_certificate(pem_or_der)


def _organization(cert: x509.Certificate) -> str:
    values = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else "?"


def _server_certificate(kit: Kit, host: str, port: int, timeout: float) -> x509.Certificate | None:
    """The coordinator's certificate, read without verifying it (to say who issued it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(kit.path / "cert.pem", kit.path / "key.pem")
    context.set_alpn_protocols(["h2"])
    try:
        with connect(host, port, timeout) as raw, context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, Unreachable):
        return None
    return None if der is None else _certificate(der)


def _not_signed(kit: Kit, host: str, port: int, timeout: float) -> Cause:
    ca = _certificate(kit.ca_pem)
    message = (
        f"TLS verification failed: the coordinator's certificate is not signed by this kit's CA "
        f"({ca.subject.rfc4514_string()}, federation {kit.federation}) — probably another "
        "federation's kit"
    )
    theirs = _server_certificate(kit, host, port, timeout)
    if theirs is not None:
        message += f" (the coordinator's certificate is from federation {_organization(theirs)})"
    return Cause("tls-verification", message)


def tls_handshake(kit: Kit, host: str, port: int, timeout: float = 3.0) -> str:
    """A mutual-TLS handshake with the coordinator as gRPC makes it; the server's subject.

    After the handshake the HTTP/2 preface is sent and the server's first bytes read, so a
    server that refuses this site's certificate (TLS 1.3 says so only then) is caught too.

    Raises
    ------
    Unreachable
        With the cause (name resolution, refused, timeout, verification, refused certificate).
    """
    where = f"{host}:{port}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=kit.ca_pem.decode("ascii"))
    context.load_cert_chain(kit.path / "cert.pem", kit.path / "key.pem")
    context.set_alpn_protocols(["h2"])
    raw = connect(host, port, timeout)
    try:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(_H2_HELLO)
            if not tls.recv(1):
                raise Unreachable(
                    Cause("lost", f"the coordinator at {where} closed the connection")
                )
    except ssl.SSLCertVerificationError as err:
        if err.verify_code in _NAME_MISMATCH:
            raise Unreachable(
                Cause(
                    "tls-verification",
                    f"TLS verification failed: the coordinator's certificate is not valid for "
                    f"{host} (provision the coordinator with --host {host}, or dial a host "
                    "it names)",
                )
            ) from None
        if err.verify_code == _EXPIRED:
            raise Unreachable(
                Cause(
                    "tls-verification",
                    "TLS verification failed: the coordinator's certificate has expired",
                )
            ) from None
        raise Unreachable(_not_signed(kit, host, port, timeout)) from None
    except ssl.SSLError as err:
        alert = (err.reason or str(err)).lower().replace("_", " ")
        raise Unreachable(
            Cause(
                "tls-refused",
                f"the coordinator refused this site's certificate at the TLS handshake ({alert}): "
                f"it does not trust this kit's CA (federation {kit.federation})",
            )
        ) from None
    except TimeoutError:
        raise Unreachable(
            Cause("timeout", f"timeout: the TLS handshake with {where} took over {timeout:g} s")
        ) from None
    except OSError as err:
        raise Unreachable(
            Cause("lost", f"the TLS handshake with {where} failed: {err.strerror or err}")
        ) from None
    finally:
        raw.close()
    return _certificate(der).subject.rfc4514_string() if der else "?"


def diagnose(kit: Kit, address: str, timeout: float = 3.0) -> Cause | None:
    """Name resolution, TCP connect and a verified TLS handshake to ``address``; the first
    cause found, or None when all three work (the failure is then above TLS)."""
    try:
        host, port = split_address(address)
        tls_handshake(kit, host, port, timeout)
    except ConfigError as err:
        return Cause("unreachable", str(err))
    except Unreachable as failed:
        return failed.cause
    return None


# gRPC status texts ---------------------------------------------------------------------------
def explain_refusal(site_id: str, details: str, kit: Kit) -> Cause:
    """The coordinator's ``UNAUTHENTICATED``/``PERMISSION_DENIED`` answer, as one line.

    ``details`` is the coordinator's text: "… (serial S) was revoked at T; …" from
    :func:`fedcare.transport.tls.identify_peer`, or "site 'X' is revoked" from its registry.
    """
    who = f"the coordinator refused site {site_id!r}"
    serial = f"{kit.serial:x}"
    when = details.split(" at ", 1)[1].split(";", 1)[0] if " at " in details else ""
    at = f" (at {when})" if when else ""
    if "was rotated" in details:
        message = (
            f"{who}: its certificate serial {serial} was replaced by a rotation{at}; "
            "install the site's new kit"
        )
        return Cause("rotated", message)
    if "revoked" in details:
        message = (
            f"{who}: its certificate serial {serial} is revoked{at}; retrying cannot help "
            "(a revoked site stays revoked: ask the federation's operator)"
        )
        return Cause("revoked", message)
    return Cause("refused-site", f"{who}: {details}")


_HINTS = (
    ("dns resolution failed", "name-resolution"),
    ("connection refused", "refused"),
    ("certificate_verify_failed", "tls-verification"),
    ("ssl handshake failed", "tls-verification"),
    ("deadline exceeded", "timeout"),
)


def explain_failure(
    code: str, details: str, kit: Kit, address: str, *, timeout: float = 3.0
) -> Cause:
    """Why a gRPC call to ``address`` failed with status ``code`` (its name) and ``details``.

    A refusal of the site (``UNAUTHENTICATED``, ``PERMISSION_DENIED``) is read from the
    coordinator's text; anything else is diagnosed again with :func:`diagnose`. When that finds
    nothing (the network and TLS work), gRPC's hint or its first line of details is given.
    """
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return explain_refusal(kit.identity, details, kit)
    found = diagnose(kit, address, timeout)
    if found is not None:
        return found
    first = (details or "").strip().splitlines()[0] if (details or "").strip() else code
    lower = first.lower()
    hint = next((kind for text, kind in _HINTS if text in lower), "")
    if code == "DEADLINE_EXCEEDED" or hint == "timeout":
        return Cause("timeout", f"timeout: the coordinator at {address} did not answer in time")
    return Cause(hint or "lost", f"{code}: {first}")
