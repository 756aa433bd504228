"""HE keys at provisioning: the secret context only in site kits, the public one for the
coordinator; ``add_site`` hands later sites the same key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

pytest.importorskip("tenseal", reason="privacy mode 'encrypted' needs the 'he' extra (tenseal)")

from fedcare.errors import ConfigError
from fedcare.secure.he.keys import (
    HE_PUBLIC_FILE,
    HE_SECRET_FILE,
    coordinator_context,
    site_context,
)
from fedcare.transport.provisioning import add_site, create_federation


def test_federation_with_he_keys(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="he-test", sites=["a", "b"], he=True)
    public = coordinator_context(fed.coordinator_kit / HE_PUBLIC_FILE)
    assert not public.has_secret_key
    assert not (fed.coordinator_kit / HE_SECRET_FILE).exists()
    later = add_site(fed.root, "c")
    for kit in [*fed.site_kits.values(), later]:
        path = kit / HE_SECRET_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = site_context(path)
        assert secret.has_secret_key and secret.fingerprint() == public.fingerprint()
    with pytest.raises(ConfigError, match="holds the secret key"):  # a secret never loads there
        coordinator_context(later / HE_SECRET_FILE)


def test_federation_without_he_keys_says_how_to_get_them(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="plain", sites=["a"])
    assert not (fed.site_kits["a"] / HE_SECRET_FILE).exists()
    with pytest.raises(ConfigError, match="provisioned with --he"):
        coordinator_context(fed.coordinator_kit / HE_PUBLIC_FILE)
    with pytest.raises(ConfigError, match="provision the federation with --he"):
        site_context(fed.site_kits["a"] / HE_SECRET_FILE)


def test_cli_provisions_he_keys_and_add_site_passes_them_on(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedcare.cli.main import app

    runner = CliRunner()
    root = tmp_path / "fed"
    args = ["provision", "new", str(root), "--name", "f", "--site", "a", "--he"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["provision", "add-site", str(root), "b"]).exit_code == 0
    public = coordinator_context(root / "kits" / "coordinator" / HE_PUBLIC_FILE)
    for site in ("a", "b"):
        secret = site_context(root / "kits" / "sites" / site / HE_SECRET_FILE)
        assert secret.fingerprint() == public.fingerprint()
