"""Output an operator can copy and that does not hide failure, at an 80-column terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.audit import AuditLog
from fedcare.cli.display import readable_reason
from fedcare.cli.main import app
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.transport.provisioning import create_federation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NARROW = {"COLUMNS": "80", "LINES": "40"}
runner = CliRunner()
REASON = (
    "round 3: no usable reply (too few replies: 0 of 2); "
    "failures: {'bern-university-hospital': 'TransportError: deadline exceeded', "
    "'zurich': 'plan-not-approved: the steward has not approved this plan'}"
)


def _invoke(args: list[str]) -> object:
    return runner.invoke(app, args, env=NARROW, terminal_width=80)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    CoordinatorStore(default_db_url(path), path / "artifacts").close()  # as the coordinator does
    return path


def _failed_study(home: Path) -> str:
    submitted = runner.invoke(
        app,
        ["study", "submit", str(EXAMPLES / "heart-disease.yaml"), "--home", str(home), "--queue"],
    )
    assert submitted.exit_code == 0, submitted.output
    study_id = submitted.stdout.strip().splitlines()[-1]
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        store.set_study_status(study_id, "failed", REASON)
    return study_id


def test_readable_reason_renders_a_site_dict_as_lines() -> None:
    text = readable_reason(REASON)
    assert "{" not in text and "'" not in text
    assert "\n  bern-university-hospital: TransportError: deadline exceeded" in text
    assert "\n  zurich: plan-not-approved: the steward has not approved this plan" in text
    assert readable_reason("failures: {}") == "failures: none"
    assert readable_reason("set {1, 2} stays") == "set {1, 2} stays"  # not a dict


def test_status_prints_whole_ids_and_readable_reasons_at_80_columns(home: Path) -> None:
    study_id = _failed_study(home)
    assert re.fullmatch(r"[0-9a-f]{32}", study_id)
    for args in (["study", "status"], ["study", "status", study_id]):
        result = runner.invoke(app, [*args, "--home", str(home)], env=NARROW, terminal_width=80)
        assert result.exit_code == 0, result.output
        assert study_id in result.stdout and "…" not in result.stdout
        assert "bern-university-hospital: TransportError: deadline exceeded" in result.stdout
        assert "{'" not in result.stdout
    prefix = runner.invoke(app, ["study", "status", study_id[:8], "--home", str(home)])
    assert prefix.exit_code == 0 and f"study {study_id}" in prefix.stdout
    cut = runner.invoke(app, ["study", "status", study_id[:15] + "…", "--home", str(home)])
    assert cut.exit_code == 0 and "status: failed" in cut.stdout


def test_report_on_a_failed_study_says_it_failed_and_why(home: Path, tmp_path: Path) -> None:
    study_id = _failed_study(home)
    out = tmp_path / "report"
    args = ["study", "report", study_id[:10], "--out", str(out), "--home", str(home)]
    result = runner.invoke(app, args, env=NARROW, terminal_width=80)
    assert result.exit_code == 1, result.output
    assert f"study {study_id} FAILED:" in result.output
    assert "zurich: plan-not-approved: the steward has not approved this plan" in result.output
    data = json.loads((out / "results.json").read_text())  # still written, to diagnose
    assert data["study"]["status"] == "failed" and data["study"]["reason"] == REASON
    assert "This study FAILED: round 3: no usable reply" in (out / "report.html").read_text()


def test_approvals_print_the_whole_plan_hash_at_80_columns(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="f", sites=["a"], coordinator_hosts=("x",))
    state = tmp_path / "state"
    where = ["--state", str(state), "--kit", str(fed.site_kits["a"])]
    plan = "0123456789abcdef" * 4
    study = "a-rather-long-study-name-for-the-heart-disease-cohort"
    approve = ["site", "approve", "--study", study, "--plan", plan, "--until", "2099-01-01"]
    ok = runner.invoke(app, [*approve, *where], env=NARROW, terminal_width=80)
    assert ok.exit_code == 0 and plan in ok.output, ok.output
    listed = runner.invoke(app, ["site", "approvals", "--state", str(state)], env=NARROW)
    assert listed.exit_code == 0 and plan in listed.stdout and study in listed.stdout


def test_provision_revoke_prints_the_hex_serial(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    create_federation(root, name="f", sites=["a", "b"])
    result = runner.invoke(app, ["provision", "revoke", str(root), "b"], env=NARROW)
    assert result.exit_code == 0, result.output
    revoked = json.loads((root / "kits" / "coordinator" / "revoked.json").read_text())
    serial = next(r["serial"] for r in revoked["revoked"] if r["site_id"] == "b")
    assert f"certificate serial {int(serial, 16):x}" in result.output  # as revoked.json
    assert "Revocation(" not in result.output and str(int(serial, 16)) not in result.output


def test_site_budget_with_no_spend_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "budget", "--state", str(tmp_path)], env=NARROW)
    assert result.exit_code == 0, result.output
    assert "no privacy budget spent yet" in result.output


def test_export_refuses_an_unknown_event_naming_the_known_ones(tmp_path: Path) -> None:
    fed = create_federation(tmp_path / "fed", name="f", sites=["a"], coordinator_hosts=("x",))
    kit = fed.site_kits["a"]
    log = tmp_path / "audit.jsonl"
    with AuditLog.open(log, key_path=kit / "key.pem", actor="a") as audit:
        audit.append("approval", study="s")
        audit.append("revocation", study="s")
    out = tmp_path / "export.jsonl"
    args = ["audit", "export", str(log), "--out", str(out), "--kit", str(kit)]
    refused = runner.invoke(app, [*args, "--event", "approval-revoked"])
    assert refused.exit_code == 2
    assert "unknown --event approval-revoked" in refused.output
    assert "this log's events: approval, revocation" in refused.output and not out.exists()
    ok = runner.invoke(app, [*args, "--event", "revocation"])
    assert ok.exit_code == 0 and "wrote 1 entries" in ok.stdout


def test_simulate_labels_weighted_progress_and_unweighted_mean(tmp_path: Path) -> None:
    args = ["simulate", "--dataset", "heart-disease", "--rounds", "2", "--out", str(tmp_path)]
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    assert "weighted " in result.output and "unweighted" in result.output


def test_every_console_prints_colon_words_literally() -> None:
    """A certificate fingerprint such as ``…:56:cd:c1:…`` must print as it is: Rich turns
    ``:cd:`` into an emoji unless its Console is built with ``emoji=False`` (a steward once
    read a fingerprint with a disc in it). Every Console the CLI builds must say so."""
    import ast

    from rich.console import Console

    src = Path(__file__).resolve().parents[2] / "src" / "fedcare"
    missing = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Console":
                keywords = {k.arg: k.value for k in node.keywords}
                flag = keywords.get("emoji")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    missing.append(f"{path.relative_to(src)}:{node.lineno}")
    assert missing == [], f"Console() without emoji=False: {missing}"
    out = Console(emoji=False, record=True, width=200)
    out.print("SHA-256 d7:97:56:cd:c1:1c", highlight=False, markup=False)
    assert "56:cd:c1" in out.export_text()
