"""Researcher identities (issue 13): a code-signing kit that is no site and no TLS client."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedcare.errors import AuthenticationError, ConfigError
from fedcare.transport.certs import site_identity
from fedcare.transport.provisioning import create_federation, list_sites
from fedcare.transport.researchers import add_researcher


def test_a_researcher_certificate_signs_code_and_has_no_site_identity(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    create_federation(root, name="r", sites=["a"])
    kit = add_researcher(root, "alice")
    assert kit == root / "kits" / "researchers" / "alice"
    cert = x509.load_pem_x509_certificate((kit / "cert.pem").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CODE_SIGNING]  # not CLIENT_AUTH: no TLS
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["fedcare://researcher/alice"]
    with pytest.raises(AuthenticationError, match="has 0 fedcare://site/ URIs"):
        site_identity(cert)
    assert [s.site_id for s in list_sites(root)] == ["a"]  # researchers are not sites


def test_add_researcher_needs_a_federation_and_a_new_valid_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no federation at"):
        add_researcher(tmp_path / "nothing", "alice")
    root = tmp_path / "fed"
    create_federation(root, name="r")
    with pytest.raises(ConfigError, match=r"researcher id '\.\./x' is invalid"):
        add_researcher(root, "../x")
    add_researcher(root, "alice")
    with pytest.raises(ConfigError, match="researcher 'alice' is already provisioned"):
        add_researcher(root, "alice")
    assert sorted(p.name for p in (root / "kits" / "researchers").iterdir()) == ["alice"]
