"""Signatures of study packages and the researcher identity that makes them.

A package is signed with ECDSA P-256 (SHA-256, deterministic nonces per RFC 6979, so the same
key and package give the same signature bytes) over its **package hash**: the SHA-256 of its
canonical ``MANIFEST.json``. The signer is a *researcher*: a certificate the federation CA
issued with the organizational unit ``researcher`` (as sites have ``site`` and the coordinator
``coordinator``, :mod:`fedcare.transport.certs`), the SAN URI ``fedcare://researcher/<id>``
and the extended key usage *code signing*, which TLS does not accept: a researcher's
certificate cannot open a connection, and a site's certificate cannot sign a package.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.errors import ConfigError, PackageError

__all__ = [
    "RESEARCHER_ID_PATTERN",
    "RESEARCHER_UNIT",
    "RESEARCHER_URI_PREFIX",
    "SIGNATURE_ALGORITHM",
    "Signer",
    "check_researcher_id",
    "check_signer",
    "sign_hash",
    "verify_hash_signature",
]

SIGNATURE_ALGORITHM = "ecdsa-p256-sha256"
#: The OU of a researcher's certificate subject (sites: ``site``; coordinator: ``coordinator``).
RESEARCHER_UNIT = "researcher"
RESEARCHER_URI_PREFIX = "fedcare://researcher/"
#: Researcher ids: like site ids, 1 to 63 of a-z, 0-9, '.', '_', '-'.
RESEARCHER_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class Signer:
    """Who signed a package: researcher id, certificate subject and serial, validity."""

    researcher_id: str
    subject: str
    serial: int
    not_after: dt.datetime


def check_researcher_id(researcher_id: str) -> str:
    """``researcher_id`` if it matches :data:`RESEARCHER_ID_PATTERN`, else ConfigError."""
    if not isinstance(researcher_id, str) or not RESEARCHER_ID_PATTERN.fullmatch(researcher_id):
        raise ConfigError(
            f"researcher id {researcher_id!r} is invalid: use 1 to 63 characters from a-z, "
            "0-9, '.', '_', '-', starting with a letter or digit"
        )
    return researcher_id


def _ecdsa() -> ec.ECDSA:
    return ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)


def sign_hash(key: ec.EllipticCurvePrivateKey, package_hash: str) -> str:
    """The base64 ECDSA signature of the 32-byte digest ``package_hash`` (hex)."""
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("a package is signed with an ECDSA P-256 key (a researcher kit's)")
    signature = key.sign(bytes.fromhex(package_hash), _ecdsa())
    return base64.b64encode(signature).decode("ascii")


def verify_hash_signature(cert: x509.Certificate, package_hash: str, signature_b64: str) -> None:
    """Check ``signature_b64`` over ``package_hash`` with the certificate's public key.

    Raises
    ------
    PackageError
        ``signature does not verify`` (with the signer's subject).
    """
    public = cert.public_key()
    subject = cert.subject.rfc4514_string()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise PackageError(f"signer {subject} does not have an ECDSA P-256 key")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public.verify(signature, bytes.fromhex(package_hash), _ecdsa())
    except (InvalidSignature, ValueError):
        raise PackageError(
            f"signature does not verify: the package hash {package_hash} was not signed by "
            f"the key of {subject}"
        ) from None


def _values(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _researcher_id(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    units = _values(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if units != [RESEARCHER_UNIT]:
        raise PackageError(
            f"signer {subject} is not a researcher: its certificate has role {units} "
            f"(OU), a package needs OU={RESEARCHER_UNIT}"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound as err:
        raise PackageError(f"signer {subject} lacks a researcher extension: {err}") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise PackageError(f"signer {subject} is not certified for code signing")
    ids = [u[len(RESEARCHER_URI_PREFIX) :] for u in uris if u.startswith(RESEARCHER_URI_PREFIX)]
    cns = _values(cert, NameOID.COMMON_NAME)
    if len(ids) != 1 or not RESEARCHER_ID_PATTERN.fullmatch(ids[0]) or cns != ids:
        raise PackageError(
            f"signer {subject} has researcher URIs {ids} and CN {cns}; a researcher "
            f"certificate has one {RESEARCHER_URI_PREFIX} URI matching its CN"
        )
    return ids[0]


def check_signer(
    cert: x509.Certificate, ca_cert: x509.Certificate, *, now: dt.datetime | None = None
) -> Signer:
    """Check that ``cert`` is a researcher certificate of the federation whose CA is ``ca_cert``.

    Raises
    ------
    PackageError
        If the CA did not sign it, it is outside its validity period (or the CA is), or it is
        not a researcher's certificate; the message names the signer and the reason.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    subject = cert.subject.rfc4514_string()
    try:
        if cert.issuer != ca_cert.subject:
            raise ValueError("issuer differs")
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PackageError(
            f"signer {subject} is not certified by this federation's CA "
            f"({ca_cert.subject.rfc4514_string()})"
        ) from None
    for what, c in (("signer " + subject, cert), ("the federation CA", ca_cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise PackageError(
                f"{what}: certificate is valid from {c.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now ({now:%Y-%m-%d %H:%M})"
            )
    researcher = _researcher_id(cert)
    return Signer(researcher, subject, cert.serial_number, cert.not_valid_after_utc)
