"""Provisioning: kit layout, file modes, certificates, and add/rotate/revoke in isolation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.errors import AuthenticationError, ConfigError
from fedcare.transport import provisioning as prov
from fedcare.transport.certs import site_identity


def cert_of(kit: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())


def snapshot(root: Path) -> dict[str, bytes]:
    files = [p for p in (root / "kits").rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture
def fed(tmp_path: Path) -> prov.Federation:
    return prov.create_federation(
        tmp_path / "fed",
        name="Heart study",
        sites=["cleveland", "hungary", "va-long.beach_1"],
        coordinator_hosts=("coordinator.example.org", "127.0.0.1", "::1"),
        coordinator_port=7443,
        days=30,
    )


def test_layout_and_file_modes(fed: prov.Federation) -> None:
    root = fed.root
    assert (root / "ca" / "ca.key").is_file() and (root / "federation.yaml").is_file()
    assert stat.S_IMODE((root / "ca" / "ca.key").stat().st_mode) == 0o600
    kits = [fed.coordinator_kit, *fed.site_kits.values()]
    assert fed.coordinator_kit == root / "kits" / "coordinator"
    assert sorted(fed.site_kits) == ["cleveland", "hungary", "va-long.beach_1"]
    ca_key = (root / "ca" / "ca.key").read_bytes()
    for kit in kits:
        names = {p.name for p in kit.iterdir()}
        assert {"ca.pem", "cert.pem", "key.pem", "kit.yaml"} <= names
        assert stat.S_IMODE((kit / "key.pem").stat().st_mode) == 0o600
        assert (kit / "ca.pem").read_bytes() == (root / "ca" / "ca.pem").read_bytes()
    everything = [p for p in (root / "kits").rglob("*") if p.is_file()]
    assert not any(p.name == "ca.key" or p.read_bytes() == ca_key for p in everything)
    assert json.loads((fed.coordinator_kit / "revoked.json").read_text()) == {
        "version": 1,
        "revoked": [],
    }


def test_kit_yaml_describes_the_participant(fed: prov.Federation) -> None:
    site = yaml.safe_load((fed.site_kits["hungary"] / "kit.yaml").read_text())
    cert = cert_of(fed.site_kits["hungary"])
    assert site["role"] == "site" and site["id"] == "hungary"
    assert site["federation"] == "Heart study"
    assert site["coordinator"] == fed.coordinator_address == "coordinator.example.org:7443"
    assert site["serial"] == format(cert.serial_number, "x")
    assert site["expires"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert site["key_type"] == prov.KEY_TYPE == "ECDSA P-256"
    coord = yaml.safe_load((fed.coordinator_kit / "kit.yaml").read_text())
    assert coord["role"] == "coordinator" and coord["hosts"][0] == "coordinator.example.org"


def test_certificates_carry_identities_and_chain_to_the_ca(fed: prov.Federation) -> None:
    ca = x509.load_pem_x509_certificate((fed.root / "ca" / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    site = cert_of(fed.site_kits["va-long.beach_1"])
    site.verify_directly_issued_by(ca)
    assert site.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "va-long.beach_1"
    san = site.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "fedcare://site/va-long.beach_1"
    ]
    eku = site.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert site_identity(site) == "va-long.beach_1"
    assert isinstance(site.public_key(), ec.EllipticCurvePublicKey)
    assert site.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    lifetime = site.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
    coord = cert_of(fed.coordinator_kit)
    coord.verify_directly_issued_by(ca)
    csan = coord.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert csan.get_values_for_type(x509.DNSName) == ["coordinator.example.org"]
    assert csan.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    with pytest.raises(AuthenticationError, match="0 fedcare://site/ URIs"):
        site_identity(coord)


def test_add_site_touches_no_other_kit(fed: prov.Federation) -> None:
    before = snapshot(fed.root)
    kit = prov.add_site(fed.root, "switzerland")
    after = snapshot(fed.root)
    assert {k: v for k, v in after.items() if not k.startswith("kits/sites/switzerland/")} == before
    assert site_identity(cert_of(kit)) == "switzerland"
    assert [s.site_id for s in prov.list_sites(fed.root)] == [
        "cleveland",
        "hungary",
        "switzerland",
        "va-long.beach_1",
    ]


def test_rotate_site_revokes_the_old_serial_only(fed: prov.Federation) -> None:
    old = cert_of(fed.site_kits["cleveland"]).serial_number
    old_key = (fed.site_kits["cleveland"] / "key.pem").read_bytes()
    before = snapshot(fed.root)
    kit = prov.rotate_site(fed.root, "cleveland")
    after = snapshot(fed.root)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {
        "kits/sites/cleveland/cert.pem",
        "kits/sites/cleveland/key.pem",
        "kits/sites/cleveland/kit.yaml",
        "kits/sites/cleveland/previous/001/cert.pem",  # kept for the audit handover
        "kits/sites/cleveland/previous/001/key.pem",
        "kits/coordinator/revoked.json",
    }
    assert (kit / "previous" / "001" / "key.pem").read_bytes() == old_key
    assert stat.S_IMODE((kit / "previous" / "001" / "key.pem").stat().st_mode) == 0o600
    assert cert_of(kit / "previous" / "001").serial_number == old
    assert (kit / "key.pem").read_bytes() != old_key
    assert stat.S_IMODE((kit / "key.pem").stat().st_mode) == 0o600
    new = cert_of(kit).serial_number
    entries = prov.read_revocations(fed.coordinator_kit / "revoked.json")
    assert [(e.serial, e.site_id, e.reason) for e in entries] == [(old, "cleveland", "rotated")]
    assert new != old and not any(s.revoked for s in prov.list_sites(fed.root))
    assert not [p for p in kit.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_revoke_site_changes_only_the_revocation_list(fed: prov.Federation) -> None:
    before = snapshot(fed.root)
    entry = prov.revoke_site(fed.root, "hungary")
    after = snapshot(fed.root)
    assert {k for k in after if after[k] != before[k]} == {"kits/coordinator/revoked.json"}
    assert entry.serial == cert_of(fed.site_kits["hungary"]).serial_number
    assert entry.site_id == "hungary" and entry.reason == "revoked"
    assert prov.revoke_site(fed.root, "hungary") == entry  # idempotent
    assert len(prov.read_revocations(fed.coordinator_kit / "revoked.json")) == 1
    status = {s.site_id: s.revoked for s in prov.list_sites(fed.root)}
    assert status == {"cleveland": False, "hungary": True, "va-long.beach_1": False}
    with pytest.raises(ConfigError, match="'hungary' is revoked"):
        prov.rotate_site(fed.root, "hungary")
    with pytest.raises(ConfigError, match="'hungary' is already provisioned"):
        prov.add_site(fed.root, "hungary")


@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "a/b", "x" * 64, "sp ace", "é"])
def test_invalid_site_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"site id .* is invalid"):
        prov.create_federation(tmp_path, name="f", sites=[bad])
    assert not (tmp_path / "ca").exists()


def test_arguments_and_unknown_sites_are_refused(fed: prov.Federation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site ids \['a'\] are listed more than once"):
        prov.create_federation(tmp_path / "x", name="f", sites=["a", "b", "a"])
    with pytest.raises(ConfigError, match="a federation already exists"):
        prov.create_federation(fed.root, name="again")
    with pytest.raises(ConfigError, match="host 'bad host!' is not a DNS name or IP"):
        prov.create_federation(tmp_path / "y", name="f", coordinator_hosts=["bad host!"])
    assert not (tmp_path / "y").exists()
    with pytest.raises(ConfigError, match="days must be"):
        prov.create_federation(tmp_path / "z", name="f", days=0)
    with pytest.raises(ConfigError, match="federation name"):
        prov.create_federation(tmp_path / "z", name="")
    for op in (prov.rotate_site, prov.revoke_site):
        with pytest.raises(ConfigError, match="site 'nowhere' is not provisioned"):
            op(fed.root, "nowhere")
    with pytest.raises(ConfigError, match="no federation at"):
        prov.add_site(tmp_path / "empty", "a")


def test_a_broken_revocation_list_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "revoked.json"
    assert prov.read_revocations(path) == []
    for text in ("{", '{"version": 2, "revoked": []}', '{"version": 1, "revoked": [{}]}'):
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"revocation list .* is invalid"):
            prov.read_revocations(path)


def test_a_second_rotation_keeps_every_earlier_key_oldest_first(fed: prov.Federation) -> None:
    first = cert_of(fed.site_kits["hungary"]).serial_number
    kit = prov.rotate_site(fed.root, "hungary")
    second = cert_of(kit).serial_number
    prov.rotate_site(fed.root, "hungary")
    assert sorted(p.name for p in (kit / "previous").iterdir()) == ["001", "002"]
    assert [cert_of(kit / "previous" / n).serial_number for n in ("001", "002")] == [first, second]
    assert all((kit / "previous" / n / "key.pem").is_file() for n in ("001", "002"))
