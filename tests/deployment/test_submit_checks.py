"""``fedcare study submit`` checks the federation it queues on (issue 11 item 2).

Against a real coordinator over mutual TLS on 127.0.0.1 (SQLite home, and PostgreSQL through
``--db``), two sites say Hello offering ``heart-disease``; then the CLI:

* queues the README's study while the coordinator runs (no warning);
* refuses ``heart-disaese``, naming what the sites offer and the closest name;
* refuses once the coordinator stopped, saying so and how to start it (the coordinator marks
  its liveness row ``stopped``; a pid file would not tell a dead coordinator from a live one);
* refuses an empty or missing ``--home`` and a ``--db`` without the schema, creating nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from fedcare.cli.main import app
from fedcare.records.messages import MESSAGE_VERSION
from fedcare.records.protocol import PROTOCOL
from fedcare.transport.grpc import fedcare_pb2 as pb

from .helpers import Kits, provision, running_coordinator
from .wire import RPC_TIMEOUT_S, site_client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"
SITES = ("cleveland", "hungary")
runner = CliRunner(env={"COLUMNS": "400"})


def _hello(kits: Kits, address: str, site: str) -> None:
    """Site ``site`` says Hello over mutual TLS, offering heart-disease (13 features)."""
    datasets = json.dumps({"heart-disease": {"input_shape": [13]}})
    request = pb.HelloRequest(
        site_version="test",
        message_version=MESSAGE_VERSION,
        datasets_json=datasets,
        protocol_major=PROTOCOL[0],
        protocol_minor=PROTOCOL[1],
    )
    with site_client(kits.sites[site], address) as stub:
        assert stub.Hello(request, timeout=RPC_TIMEOUT_S).site_id == site


def _submit(tmp_path: Path, home: Path, *options: str, **changes: Any) -> Result:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(EXAMPLE.read_text()), **changes}))
    return runner.invoke(app, ["study", "submit", str(path), "--home", str(home), *options])


def _refused(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    for part in parts:
        assert part in line, line


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_submit_checks_the_running_coordinator_and_its_sites(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    db = ["--db", db_url] if db_url else []
    kits = provision(tmp_path / "fed", SITES, name="submit-checks")
    home = tmp_path / "coord"
    if db_url:  # the coordinator has not made its schema yet
        home.mkdir()
        _refused(_submit(tmp_path, home, *db), "holds no fedcare coordinator schema")
    with running_coordinator(kits, home, db_url=db_url, beat_s=0.5) as coordinator:
        for site in SITES:
            _hello(kits, f"127.0.0.1:{coordinator.port}", site)
        accepted = _submit(tmp_path, home, *db)
        assert accepted.exit_code == 0 and "warning" not in accepted.output, accepted.output
        study_id = accepted.stdout.strip()
        assert coordinator.store.get_study(study_id).name == "heart-disease-fedavg"
        coordinator.store.set_study_status(study_id, "cancelled", "test over")
        _refused(
            _submit(tmp_path, home, *db, dataset={"name": "heart-disaese"}),
            "dataset 'heart-disaese' is offered by 0 of the 2 sites the study needs "
            "(min_sites); sites offer: heart-disease (cleveland, hungary); did you mean "
            "'heart-disease'?",
        )
    _refused(
        _submit(tmp_path, home, *db),
        f"the coordinator for {home} is not running (stopped at ",
        f"start it with `fedcare coordinator start --kit KIT --home {home}",
        "or pass --queue to queue the study anyway",
    )
    queued = _submit(tmp_path, home, *db, "--queue")
    assert queued.exit_code == 0 and "queued anyway (--queue)" in queued.output, queued.output
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    _refused(_submit(tmp_path, empty), f"{empty} is not a coordinator home: no fedcare database")
    _refused(_submit(tmp_path, missing), f"{missing} is not a coordinator home: the folder")
    assert list(empty.iterdir()) == [] and not missing.exists()
