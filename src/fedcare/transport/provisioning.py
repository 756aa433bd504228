"""Certificates for a federation: a CA, a coordinator certificate and one per site.

Layout under ``root`` (the operator's folder)::

    federation.yaml                 name, coordinator address and hosts, validity (operator's)
    ca/ca.key  ca/ca.pem            the federation CA; the key never goes into a kit
    kits/coordinator/               ca.pem, cert.pem, key.pem (0600), kit.yaml, revoked.json
    kits/sites/<site_id>/           ca.pem, cert.pem, key.pem (0600), kit.yaml
    with ``he=True`` also:          ca/he_secret.ctx (0600), kits/coordinator/he_public.ctx,
                                    kits/sites/<site_id>/he_secret.ctx (0600)

The HE key pair (CKKS, privacy mode ``encrypted``) is made once, here, by the operator: the
SECRET context goes only into site kits (and ``ca/``, to provision later sites), the PUBLIC
one (no secret key) into the coordinator's kit. See :mod:`fedcare.secure.he.keys` for that
trust assumption and what would remove it.

Each ``kits/...`` folder is a *startup kit*, handed to one participant as it is. A site's
certificate has the subject CN ``<site_id>`` and the SAN URI ``fedcare://site/<site_id>``;
that is the identity the coordinator reads from the TLS handshake (:mod:`fedcare.transport.tls`).
Keys are ECDSA on the NIST P-256 curve, which gRPC's TLS (BoringSSL) accepts.

:func:`add_site`, :func:`rotate_site` and :func:`revoke_site` change only that site's kit and
the coordinator's ``revoked.json`` (serials, site ids and times), which a running coordinator
re-reads when it changes. Every file is written to a temporary name and renamed into place, so
a reader never sees half a file. Site ids are never reused, so a revoked id stays revoked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.errors import ConfigError
from fedcare.transport.certs import (
    KEY_TYPE,
    CertifiedKey,
    cert_pem,
    check_site_id,
    issue_coordinator,
    issue_site,
    key_pem,
    make_ca,
)
from fedcare.transport.kit_history import carry_history
from fedcare.transport.revocations import Revocation, read_revocations

__all__ = [
    "Federation",
    "Revocation",
    "SiteStatus",
    "add_site",
    "create_federation",
    "list_sites",
    "read_revocations",
    "revoke_site",
    "rotate_site",
]

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,62}")


@dataclass(frozen=True)
class Federation:
    """What :func:`create_federation` made: the root folder and every kit in it."""

    name: str
    root: Path
    coordinator_address: str
    coordinator_kit: Path
    site_kits: dict[str, Path]


@dataclass(frozen=True)
class SiteStatus:
    """A provisioned site: its current certificate and whether it is revoked."""

    site_id: str
    serial: int
    expires: dt.datetime
    revoked: bool


# Files ------------------------------------------------------------------------------------
def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Kits -----------------------------------------------------------------------------------------
def _write_kit(
    folder: Path,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    info: dict[str, Any],
) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(folder / "ca.pem", cert_pem(ca_cert), 0o644)
    _write(folder / "cert.pem", cert_pem(cert), 0o644)
    _write(folder / "key.pem", key_pem(key), 0o600)
    meta = {
        **info,
        "serial": format(cert.serial_number, "x"),
        "issued": _utc(cert.not_valid_before_utc),
        "expires": _utc(cert.not_valid_after_utc),
        "key_type": KEY_TYPE,
    }
    _write(folder / "kit.yaml", yaml.safe_dump(meta, sort_keys=False).encode(), 0o644)


def _load_federation(root: Path) -> tuple[dict[str, Any], CertifiedKey]:
    path = root / "federation.yaml"
    if not path.is_file():
        raise ConfigError(f"no federation at {root}: {path} is missing")
    meta = yaml.safe_load(path.read_text())
    key = serialization.load_pem_private_key((root / "ca" / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the CA key under {root / 'ca'} is not a {KEY_TYPE} key")
    cert = x509.load_pem_x509_certificate((root / "ca" / "ca.pem").read_bytes())
    return meta, (key, cert)


def _site_dir(root: Path, site_id: str) -> Path:
    return root / "kits" / "sites" / site_id


def _issue_site_kit(root: Path, meta: dict[str, Any], ca: CertifiedKey, site_id: str) -> Path:
    """Build the site's kit in a temporary folder, then move it into place."""
    key, cert = issue_site(ca, site_id, int(meta["days"]))
    final = _site_dir(root, site_id)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{site_id}."))
    info = {
        "role": "site",
        "id": site_id,
        "federation": meta["name"],
        "coordinator": meta["coordinator_address"],
    }
    _write_kit(tmp, ca[1], key, cert, info)
    _copy_he_secret(root, tmp)
    old = final.with_name(f".{site_id}.old")
    if final.exists():  # a rotation: the new kit keeps the old key for the audit handover
        carry_history(final, tmp)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _serial_of(folder: Path) -> tuple[int, dt.datetime]:
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    return cert.serial_number, cert.not_valid_after_utc


# Revocations ----------------------------------------------------------------------------------
def _revoked_path(root: Path) -> Path:
    return root / "kits" / "coordinator" / "revoked.json"


def _append_revocation(root: Path, serial: int, site_id: str, reason: str) -> Revocation:
    path = _revoked_path(root)
    entries = read_revocations(path)
    entry = Revocation(serial, site_id, _utc(dt.datetime.now(dt.timezone.utc)), reason)
    doc = {
        "version": 1,
        "revoked": [
            {
                "serial": format(e.serial, "x"),
                "site_id": e.site_id,
                "revoked_at": e.revoked_at,
                "reason": e.reason,
            }
            for e in [*entries, entry]
        ],
    }
    _write(path, (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    return entry


# Public operations -----------------------------------------------------------------------------
def create_federation(
    root: str | os.PathLike[str],
    *,
    name: str,
    coordinator_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    coordinator_port: int = 50051,
    sites: Sequence[str] = (),
    days: int = 365,
    ca_days: int = 3650,
    he: bool = False,
) -> Federation:
    """Create a federation CA, the coordinator's kit and one kit per site under ``root``.

    Parameters
    ----------
    root:
        The operator's folder; must not already hold a federation.
    name:
        Federation name (1 to 63 letters, digits, spaces, '.', '_', '-').
    coordinator_hosts:
        DNS names and IP addresses the coordinator's certificate is valid for; the first,
        with ``coordinator_port``, is the address written into site kits.
    sites:
        Site ids to provision now (more can be added with :func:`add_site`).
    days, ca_days:
        Validity of the coordinator and site certificates, and of the CA.
    he:
        Also make the federation's HE key pair (needs the ``he`` extra, TenSEAL).

    Raises
    ------
    ConfigError
        If a federation exists at ``root`` or an argument is invalid (names it).
    """
    root = Path(root)
    _check_arguments(name, days, ca_days, coordinator_port)
    site_ids = [check_site_id(s) for s in sites]
    dupes = sorted({s for s in site_ids if site_ids.count(s) > 1})
    if dupes:
        raise ConfigError(f"site ids {dupes} are listed more than once")
    if (root / "federation.yaml").exists() or (root / "ca").exists():
        raise ConfigError(f"a federation already exists at {root}")
    hosts = list(coordinator_hosts)
    ca = make_ca(name, ca_days)
    key, cert = issue_coordinator(ca, hosts, days)  # checks the hosts before anything is written
    (root / "ca").mkdir(parents=True, mode=0o700)
    _write(root / "ca" / "ca.key", key_pem(ca[0]), 0o600)
    _write(root / "ca" / "ca.pem", cert_pem(ca[1]), 0o644)
    host = f"[{hosts[0]}]" if ":" in hosts[0] else hosts[0]
    address = f"{host}:{coordinator_port}"
    meta = {
        "name": name,
        "coordinator_address": address,
        "coordinator_hosts": hosts,
        "days": days,
        "key_type": KEY_TYPE,
    }
    _write(root / "federation.yaml", yaml.safe_dump(meta, sort_keys=False).encode(), 0o644)
    coordinator = root / "kits" / "coordinator"
    info = {
        "role": "coordinator",
        "id": "coordinator",
        "federation": name,
        "coordinator": address,
        "hosts": hosts,
    }
    _write_kit(coordinator, ca[1], key, cert, info)
    _write(_revoked_path(root), b'{\n  "version": 1,\n  "revoked": []\n}\n', 0o644)
    if he:
        _make_he_keys(root, coordinator)
    kits = {s: _issue_site_kit(root, meta, ca, s) for s in site_ids}
    return Federation(name, root, address, coordinator, kits)


def _make_he_keys(root: Path, coordinator: Path) -> None:
    """The federation's CKKS key pair: secret to ``ca/`` (0600), public to the coordinator."""
    from fedcare.secure.he.ckks import CKKSBackend
    from fedcare.secure.he.keys import HE_PUBLIC_FILE, HE_SECRET_FILE

    backend = CKKSBackend.keygen()
    _write(root / "ca" / HE_SECRET_FILE, backend.secret_bytes(), 0o600)
    public = backend.public_bytes()
    assert not CKKSBackend.from_bytes(public).has_secret_key  # never the secret to the coordinator
    _write(coordinator / HE_PUBLIC_FILE, public, 0o644)


def _copy_he_secret(root: Path, kit: Path) -> None:
    """Give a site kit the federation's HE secret context, if the federation has one."""
    from fedcare.secure.he.keys import HE_SECRET_FILE

    source = root / "ca" / HE_SECRET_FILE
    if source.is_file():
        _write(kit / HE_SECRET_FILE, source.read_bytes(), 0o600)


def _check_arguments(name: str, days: int, ca_days: int, port: int) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"federation name {name!r} is invalid: use 1 to 63 letters, digits, spaces, "
            "'.', '_' or '-'"
        )
    if not isinstance(ca_days, int) or ca_days < 1:
        raise ConfigError(f"ca_days must be a positive int, got {ca_days!r}")
    if not isinstance(days, int) or not 1 <= days <= ca_days:
        raise ConfigError(f"days must be an int from 1 to ca_days={ca_days}, got {days!r}")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"coordinator_port must be 1 to 65535, got {port!r}")


def list_sites(root: str | os.PathLike[str]) -> list[SiteStatus]:
    """Every provisioned site with its current serial, expiry and revocation, sorted by id."""
    folder = Path(root) / "kits" / "sites"
    revoked = {e.serial for e in read_revocations(_revoked_path(Path(root)))}
    out = []
    for kit in sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.startswith(".")):
        serial, expires = _serial_of(kit)
        out.append(SiteStatus(kit.name, serial, expires, serial in revoked))
    return out


def _known_site(root: Path, site_id: str) -> SiteStatus:
    check_site_id(site_id)
    for status in list_sites(root):
        if status.site_id == site_id:
            return status
    raise ConfigError(f"site {site_id!r} is not provisioned in the federation at {root}")


def add_site(root: str | os.PathLike[str], site_id: str) -> Path:
    """Issue a kit for a new site; no other kit changes. Returns the kit folder.

    Raises
    ------
    ConfigError
        If the id is invalid or already used (site ids are never reused, even once revoked).
    """
    root = Path(root)
    meta, ca = _load_federation(root)
    check_site_id(site_id)
    if _site_dir(root, site_id).exists():
        raise ConfigError(f"site {site_id!r} is already provisioned at {_site_dir(root, site_id)}")
    return _issue_site_kit(root, meta, ca, site_id)


def rotate_site(root: str | os.PathLike[str], site_id: str) -> Path:
    """Give a site a new key and certificate and revoke its old serial. Returns the kit folder.

    The new kit keeps the old certificate and key under ``previous/`` (see
    :mod:`fedcare.transport.kit_history`), so the site's audit chain carries over.

    Raises
    ------
    ConfigError
        If the site is unknown or revoked (names it).
    """
    root = Path(root)
    meta, ca = _load_federation(root)
    status = _known_site(root, site_id)
    if status.revoked:
        raise ConfigError(f"site {site_id!r} is revoked; a revoked site cannot be rotated")
    kit = _issue_site_kit(root, meta, ca, site_id)
    _append_revocation(root, status.serial, site_id, "rotated")
    return kit


def revoke_site(root: str | os.PathLike[str], site_id: str) -> Revocation:
    """Revoke a site's current certificate; the coordinator refuses it from its next call.

    Revoking a revoked site changes nothing and returns the existing entry.

    Raises
    ------
    ConfigError
        If the site is unknown (names it).
    """
    root = Path(root)
    status = _known_site(root, site_id)
    for entry in read_revocations(_revoked_path(root)):
        if entry.serial == status.serial:
            return entry
    return _append_revocation(root, status.serial, site_id, "revoked")
