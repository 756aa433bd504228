"""Operator commands: provisioning and studies on the coordinator's database."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.store import CoordinatorStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_provision_add_rotate_revoke(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    result = runner.invoke(
        app, ["provision", "new", str(root), "--name", "f", "--site", "a", "--site", "b"]
    )
    assert result.exit_code == 0, result.output
    kit_a = (root / "kits" / "sites" / "a" / "cert.pem").read_bytes()
    assert runner.invoke(app, ["provision", "add-site", str(root), "c"]).exit_code == 0
    assert (root / "kits" / "sites" / "c" / "key.pem").exists()
    assert runner.invoke(app, ["provision", "rotate", str(root), "b"]).exit_code == 0
    assert runner.invoke(app, ["provision", "revoke", str(root), "c"]).exit_code == 0
    revoked = json.loads((root / "kits" / "coordinator" / "revoked.json").read_text())
    assert {r["site_id"] for r in revoked["revoked"]} >= {"b", "c"}
    assert (root / "kits" / "sites" / "a" / "cert.pem").read_bytes() == kit_a  # untouched
    again = runner.invoke(app, ["provision", "add-site", str(root), "a"])
    assert again.exit_code == 2 and "a" in again.output


def test_study_submit_status_cancel_report(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "home")]
    CoordinatorStore(default_db_url(tmp_path / "home"), tmp_path / "home" / "artifacts").close()
    example = str(EXAMPLES / "heart-disease.yaml")
    submitted = runner.invoke(app, ["study", "submit", example, *home, "--queue"])  # no site yet
    assert submitted.exit_code == 0, submitted.output
    study_id = submitted.output.strip().splitlines()[-1]
    status = runner.invoke(app, ["study", "status", *home])
    assert status.exit_code == 0 and "pending" in status.output and "-/20" in status.output
    assert runner.invoke(app, ["study", "cancel", study_id, *home]).exit_code == 0
    status = runner.invoke(app, ["study", "status", study_id, *home])
    assert "cancelled" in status.output
    again = runner.invoke(app, ["study", "cancel", study_id, *home])
    assert again.exit_code == 2 and "cancelled" in again.output
    report = runner.invoke(app, ["study", "report", study_id, "--out", str(tmp_path / "r"), *home])
    assert report.exit_code == 0, report.output
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data["study"]["status"] == "cancelled" and data["history"] == []
    bad = runner.invoke(app, ["study", "submit", str(tmp_path / "missing.yaml"), *home, "--queue"])
    assert bad.exit_code == 2 and "cannot read study file" in bad.output
