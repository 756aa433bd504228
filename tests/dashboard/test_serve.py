"""Serving a coordinator home's API over TLS with its kit's certificate."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.serve import serve_coordinator_api
from fedcare.errors import ConfigError

from ..deployment.helpers import provision


def test_a_coordinator_home_is_served_over_tls_signed_by_the_federation_ca(
    tmp_path: Path,
) -> None:
    kits = provision(tmp_path / "fed", sites=("hungary",))
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(f"sqlite:///{home / 'coordinator.db'}", home / "artifacts") as store:
        token = store.add_user("olga", "operator")
        store.create_study("heart", {"rounds": 2}, 1)
    server = serve_coordinator_api(home, kits.coordinator, "127.0.0.1", 0)
    try:
        url = f"https://127.0.0.1:{server.port}/api/v1/studies"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        trusted = ssl.create_default_context(cafile=str(kits.coordinator / "ca.pem"))
        with urllib.request.urlopen(req, context=trusted, timeout=10) as resp:
            assert [s["name"] for s in json.loads(resp.read())] == ["heart"]
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(req, context=ssl.create_default_context(), timeout=10)
        plain = url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(plain, timeout=10)
    finally:
        server.stop()


def test_a_folder_that_is_not_a_coordinator_home_is_refused(tmp_path: Path) -> None:
    kits = provision(tmp_path / "fed", sites=("hungary",))
    with pytest.raises(ConfigError, match="is not a coordinator home"):
        serve_coordinator_api(tmp_path / "nope", kits.coordinator, "127.0.0.1", 0)
