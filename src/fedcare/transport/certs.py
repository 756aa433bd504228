"""X.509 for fedcare: issue federation certificates and read a site's identity from one.

Pure functions over :mod:`cryptography` objects; files are written by
:mod:`fedcare.transport.provisioning`. Keys are ECDSA on the NIST P-256 curve (accepted by
gRPC's TLS, BoringSSL), signatures SHA-256.

**How a site is bound to its identity.** A site certificate is signed by the federation CA and
carries the site id twice: as the subject common name and as the only SAN URI of the form
``fedcare://site/<site_id>``. :func:`site_identity` accepts a certificate only when both are
present, agree and form a valid site id; the coordinator certificate (CN ``coordinator``, no
site URI) has no site identity. Because the TLS handshake proves the peer holds the key of a
certificate chained to the federation CA, the id read from it is the caller's identity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.errors import AuthenticationError, ConfigError
from fedcare.packages.signing import RESEARCHER_UNIT, RESEARCHER_URI_PREFIX, check_researcher_id

__all__ = [
    "KEY_TYPE",
    "SITE_ID_PATTERN",
    "SITE_URI_PREFIX",
    "CertifiedKey",
    "cert_pem",
    "check_site_id",
    "issue_coordinator",
    "issue_researcher",
    "issue_site",
    "key_pem",
    "make_ca",
    "site_identity",
]

KEY_TYPE = "ECDSA P-256"
#: Site ids: 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit.
SITE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SITE_URI_PREFIX = "fedcare://site/"
_HOST_PATTERN = re.compile(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_CLOCK_SKEW = dt.timedelta(minutes=5)

CertifiedKey = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key in unencrypted PKCS#8 PEM (the file holding it must be mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def check_site_id(site_id: str) -> str:
    """Return ``site_id`` if it matches :data:`SITE_ID_PATTERN`, else raise ConfigError."""
    if not isinstance(site_id, str) or not SITE_ID_PATTERN.fullmatch(site_id):
        raise ConfigError(
            f"site id {site_id!r} is invalid: use 1 to 63 characters from a-z, 0-9, '.', '_', "
            "'-', starting with a letter or digit"
        )
    return site_id


def _name(common_name: str, federation: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def make_ca(federation: str, days: int) -> CertifiedKey:
    """A new self-signed federation CA (path length 0: it signs only end certificates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{federation} CA", federation, "ca")
    cert = (
        _builder(subject, subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca: CertifiedKey,
    common_name: str,
    unit: str,
    san: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> CertifiedKey:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    federation = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    cert = (
        _builder(_name(common_name, str(federation), unit), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not isinstance(host, str) or not _HOST_PATTERN.fullmatch(host):
                raise ConfigError(f"coordinator host {host!r} is not a DNS name or IP") from None
            names.append(x509.DNSName(host))
    if not names:
        raise ConfigError("coordinator_hosts must name at least one DNS name or IP address")
    return names


def issue_coordinator(ca: CertifiedKey, hosts: Sequence[str], days: int) -> CertifiedKey:
    """A TLS server certificate for the coordinator, valid for the DNS names and IPs given."""
    san = _host_names(hosts)
    return _issue(ca, "coordinator", "coordinator", san, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_site(ca: CertifiedKey, site_id: str, days: int) -> CertifiedKey:
    """A TLS client certificate for a site: CN and SAN URI ``fedcare://site/<site_id>``."""
    check_site_id(site_id)
    san = [x509.UniformResourceIdentifier(SITE_URI_PREFIX + site_id)]
    return _issue(ca, site_id, "site", san, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def issue_researcher(ca: CertifiedKey, researcher_id: str, days: int) -> CertifiedKey:
    """A code-signing certificate for a researcher (OU ``researcher``, SAN URI
    ``fedcare://researcher/<id>``): it signs study packages and cannot authenticate TLS."""
    check_researcher_id(researcher_id)
    san = [x509.UniformResourceIdentifier(RESEARCHER_URI_PREFIX + researcher_id)]
    usage = ExtendedKeyUsageOID.CODE_SIGNING
    return _issue(ca, researcher_id, RESEARCHER_UNIT, san, usage, days)


def site_identity(cert: x509.Certificate) -> str:
    """The site id a certificate was issued to.

    The CN and the single ``fedcare://site/`` SAN URI must both be present and name the same
    valid site id. Whether the certificate chains to the federation CA is the TLS layer's job.

    Raises
    ------
    AuthenticationError
        If the certificate lacks a site identity or its CN and SAN disagree.
    """
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    ids = [u[len(SITE_URI_PREFIX) :] for u in uris if u.startswith(SITE_URI_PREFIX)]
    subject = cert.subject.rfc4514_string()
    if len(ids) != 1:
        raise AuthenticationError(
            f"certificate {subject!r} (serial {cert.serial_number:x}) has {len(ids)} "
            f"{SITE_URI_PREFIX} URIs; a site certificate has exactly one"
        )
    site_id = ids[0]
    if not SITE_ID_PATTERN.fullmatch(site_id) or cns != [site_id]:
        raise AuthenticationError(
            f"certificate {subject!r} (serial {cert.serial_number:x}) names site {site_id!r} "
            f"in its SAN but has CN {cns}; not a valid site certificate"
        )
    return site_id
