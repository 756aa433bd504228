"""`fedcare site doctor` and `fedcare site start`: a site's checks, one line each, for real.

A real coordinator of federation 'alpha' serves mutual TLS on 127.0.0.1; the doctor checks a
good site, another federation's kit, a revoked site, the coordinator's kit and a closed port;
`site start` refuses the coordinator's kit (exit 2) and names a TLS failure without raw gRPC
log lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.server import Coordinator
from fedcare.transport.provisioning import create_federation, revoke_site
from fedcare.transport.tls import load_kit

from ..deployment.helpers import Kits, provision, running_coordinator

DATA_YAML = """datasets:
  synthetic:
    builtin: synthetic
    site: site-0
    options: {n_features: 4, rows_per_site: 40}
"""
NETWORK = ("name resolution", "TCP connect", "TLS handshake", "coordinator accepts this site")


@pytest.fixture(scope="module")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kits, Coordinator]]:
    root = tmp_path_factory.mktemp("alpha")
    kits = provision(root / "fed", ("good", "doomed"), name="alpha")
    with running_coordinator(kits, root / "home") as coordinator:
        yield kits, coordinator


def _doctor(*args: str) -> tuple[int, dict[str, str]]:
    result = CliRunner().invoke(app, ["site", "doctor", *args], env={"COLUMNS": "80"})
    lines = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(": ")
        lines[name] = rest
    return result.exit_code, lines


def test_doctor_passes_every_check_of_a_good_site(alpha: tuple, tmp_path: Path) -> None:
    kits, coordinator = alpha
    data = tmp_path / "data.yaml"
    data.write_text(DATA_YAML)
    code, lines = _doctor(
        "--kit", str(kits.sites["good"]), "--data", str(data), "--state", str(tmp_path / "st"),
        "--coordinator", f"127.0.0.1:{coordinator.port}",
    )  # fmt: skip
    assert code == 0, lines
    assert list(lines) == [
        "kit files and role", "certificate", "data", "state folder", *NETWORK,
    ]  # fmt: skip
    assert all(v.startswith("ok (") for v in lines.values()), lines
    assert lines["data"] == "ok (synthetic: 40 rows)"
    assert lines["coordinator accepts this site"] == (
        "ok (site good of federation alpha; not registered yet: its agent registers at its "
        "first Hello)"
    )
    assert coordinator.store.list_sites() == []  # the doctor's call registered nothing


def test_doctor_names_another_federations_ca(alpha: tuple, tmp_path: Path) -> None:
    _, coordinator = alpha
    beta = create_federation(
        tmp_path / "beta", name="beta", sites=["good"], coordinator_hosts=("127.0.0.1",)
    )
    code, lines = _doctor(
        "--kit", str(beta.site_kits["good"]), "--coordinator", f"127.0.0.1:{coordinator.port}"
    )
    assert code == 1
    assert lines["data"] == "skipped (no --data given)"
    assert lines["TCP connect"].startswith("ok (")
    assert lines["TLS handshake"] == (
        "FAILED: TLS verification failed: the coordinator's certificate is not signed by this "
        "kit's CA (CN=beta CA,OU=ca,O=beta, federation beta) — probably another federation's "
        "kit (the coordinator's certificate is from federation alpha)"
    )
    assert lines["coordinator accepts this site"] == "skipped (an earlier check failed)"


def test_doctor_names_a_revoked_certificate(alpha: tuple) -> None:
    kits, coordinator = alpha
    entry = revoke_site(kits.root, "doomed")
    serial = load_kit(kits.sites["doomed"]).serial
    code, lines = _doctor(
        "--kit", str(kits.sites["doomed"]), "--coordinator", f"127.0.0.1:{coordinator.port}"
    )
    assert code == 1
    assert lines["TLS handshake"].startswith("ok (")
    assert lines["coordinator accepts this site"] == (
        f"FAILED: the coordinator refused site 'doomed': its certificate serial {serial:x} is "
        f"revoked (at {entry.revoked_at}); retrying cannot help (a revoked site stays revoked: "
        "ask the federation's operator)"
    )


def test_doctor_refuses_the_coordinator_kit_and_a_closed_port(alpha: tuple) -> None:
    kits, _ = alpha
    code, lines = _doctor("--kit", str(kits.coordinator))
    assert code == 1
    assert lines["kit files and role"] == (
        f"FAILED: {kits.coordinator} is the coordinator's kit, not a site kit; use "
        "kits/sites/<site>/"
    )
    assert lines["TLS handshake"] == "skipped (no usable kit)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, lines = _doctor("--kit", str(kits.sites["good"]), "--coordinator", f"127.0.0.1:{port}")
    assert code == 1
    assert lines["TCP connect"] == (
        f"FAILED: connection refused at 127.0.0.1:{port} (is the coordinator running?)"
    )


def test_site_start_refuses_the_coordinator_kit_with_exit_2(alpha: tuple, tmp_path: Path) -> None:
    kits, _ = alpha
    data = tmp_path / "data.yaml"
    data.write_text(DATA_YAML)
    result = CliRunner().invoke(
        app,
        ["site", "start", "--kit", str(kits.coordinator), "--data", str(data),
         "--state", str(tmp_path / "st")],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "is the coordinator's kit, not a site kit; use kits/sites/<site>/" in result.output
    assert not (tmp_path / "st").exists()  # refused before the state folder is touched


def test_site_start_names_a_tls_failure_without_raw_grpc_lines(
    alpha: tuple, tmp_path: Path
) -> None:
    _, coordinator = alpha
    beta = create_federation(
        tmp_path / "beta", name="beta", sites=["good"], coordinator_hosts=("127.0.0.1",)
    )
    data = tmp_path / "data.yaml"
    data.write_text(DATA_YAML)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedcare", "site", "start",
             "--kit", str(beta.site_kits["good"]), "--data", str(data),
             "--state", str(tmp_path / "st"), "--coordinator", f"127.0.0.1:{coordinator.port}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "still failing" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    output = log.read_text()
    assert (
        "cannot reach the coordinator: TLS verification failed: the coordinator's certificate "
        "is not signed by this kit's CA (CN=beta CA,OU=ca,O=beta, federation beta)"
    ) in output, output
    assert "ssl_transport_security" not in output and "Handshake failed" not in output, output
    assert "StatusCode" not in output and "UNAVAILABLE" not in output, output
