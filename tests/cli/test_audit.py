"""``fedcare audit verify|export`` on a log written with a real site kit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.audit import AuditLog
from fedcare.cli.main import app
from fedcare.transport.provisioning import create_federation

runner = CliRunner()


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    fed = create_federation(
        tmp_path_factory.mktemp("fed"), name="cli-audit", sites=["cleveland", "hungary"]
    )
    return {"coordinator": fed.coordinator_kit, **fed.site_kits}


@pytest.fixture
def log(tmp_path: Path, kits: dict[str, Path]) -> Path:
    path = tmp_path / "coordinator.log"
    with AuditLog.open(path, key_path=kits["coordinator"] / "key.pem", actor="coordinator") as a:
        for i in range(6):
            a.append("round_aggregated" if i % 2 else "task_sent", round=i, site="cleveland")
    return path


def test_verify_ok_with_kit_or_cert(log: Path, kits: dict[str, Path]) -> None:
    by_kit = runner.invoke(app, ["audit", "verify", str(log), "--kit", str(kits["coordinator"])])
    last = json.loads(log.read_bytes().splitlines()[-1])["hash"]
    assert by_kit.exit_code == 0
    assert by_kit.stdout.splitlines() == ["ok: 6 entries", f"checkpoint: 6:{last}"]
    cert = kits["coordinator"] / "cert.pem"
    assert runner.invoke(app, ["audit", "verify", str(log), "--cert", str(cert)]).exit_code == 0
    unchecked = runner.invoke(app, ["audit", "verify", str(log)])
    assert unchecked.exit_code == 0 and "signatures NOT checked" in unchecked.stdout


def test_verify_names_the_first_bad_entry(log: Path, kits: dict[str, Path]) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2], lines[4] = lines[4], lines[2]
    log.write_bytes(b"".join(lines))
    result = runner.invoke(app, ["audit", "verify", str(log), "--kit", str(kits["coordinator"])])
    assert result.exit_code == 1
    assert result.stdout.strip() == (
        "FAILED: entry 3: seq is 5, expected 3 (an entry was deleted, inserted or moved)"
    )
    foreign = runner.invoke(app, ["audit", "verify", str(log), "--kit", str(kits["hungary"])])
    assert foreign.exit_code == 1 and "entry 1: signature does not verify" in foreign.stdout


def test_verify_bad_arguments_exit_2(tmp_path: Path, log: Path, kits: dict[str, Path]) -> None:
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "none.log")])
    assert missing.exit_code == 2 and "none.log does not exist" in missing.output
    unreadable = runner.invoke(app, ["audit", "verify", str(log), "--cert", "x.pem"])
    assert unreadable.exit_code == 2 and "cert_path x.pem: cannot read" in unreadable.output


def test_export(log: Path, kits: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    args = ["audit", "export", str(log), "--out", str(out), "--kit", str(kits["coordinator"])]
    result = runner.invoke(app, [*args, "--event", "task_sent"])
    assert result.exit_code == 0, result.output
    assert f"wrote 3 entries to {out} (verified)" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["data"]["round"] for r in rows] == [0, 2, 4]
    log.write_bytes(log.read_bytes()[:-10])
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "entry 6: the last line is torn" in refused.output
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and "NOT verified: entry 6" in forced.stdout


def test_verify_against_a_witnessed_checkpoint(log: Path, kits: dict[str, Path]) -> None:
    head = Path(f"{log}.head")
    old_log, old_head = log.read_bytes(), head.read_bytes()
    with AuditLog.open(log, key_path=kits["coordinator"] / "key.pem", actor="coordinator") as a:
        a.append("task_sent", round=6, site="hungary")
        seen = str(a.checkpoint())  # what a site (the witness) was shown
    args = ["audit", "verify", str(log), "--kit", str(kits["coordinator"])]
    assert runner.invoke(app, [*args, "--witness", seen]).exit_code == 0
    log.write_bytes(old_log)  # both files rolled back to an older copy
    head.write_bytes(old_head)
    assert runner.invoke(app, args).exit_code == 0  # undetectable without the witness
    result = runner.invoke(app, [*args, "--witness", seen])
    assert result.exit_code == 1
    assert "entry 7: missing; a witnessed checkpoint names entry 7" in result.stdout
    bad = runner.invoke(app, [*args, "--witness", "six"])
    assert bad.exit_code == 2 and "'six' is not 'seq:hash'" in bad.output
