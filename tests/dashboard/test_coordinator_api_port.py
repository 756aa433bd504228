"""``fedcare coordinator start --api-port``: a real coordinator process serves the HTTP API
over TLS with its kit's certificate, next to the sites' gRPC port."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore

from ..deployment.helpers import provision
from ..deployment.processes import Processes, free_port

pytestmark = pytest.mark.slow


def test_coordinator_start_serves_the_api_on_its_own_port(tmp_path: Path) -> None:
    kits = provision(tmp_path / "fed", sites=("hungary",))
    home = tmp_path / "home"
    home.mkdir()
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        token = store.add_user("olga", "operator")
    port, api_port = free_port(), free_port()
    procs = Processes(tmp_path / "logs")
    ctx = ssl.create_default_context(cafile=str(kits.coordinator / "ca.pem"))
    try:
        procs.start(
            "coordinator",
            *("coordinator", "start", "--kit", str(kits.coordinator), "--home", str(home)),
            *("--listen", f"127.0.0.1:{port}", "--api-port", str(api_port)),
        )
        base = f"https://127.0.0.1:{api_port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            procs.check("coordinator")
            try:
                with urllib.request.urlopen(f"{base}/health", context=ctx, timeout=5) as resp:
                    assert json.loads(resp.read()) == {"status": "ok"}
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, procs.describe()
                time.sleep(0.2)
        req = urllib.request.Request(f"{base}/sites", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert json.loads(resp.read()) == []
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"{base}/sites", context=ctx, timeout=10)
        assert "HTTP API on https://127.0.0.1:" in procs.log("coordinator")
    finally:
        procs.stop_all()
