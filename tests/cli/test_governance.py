"""The steward's commands: plan, approve, refuse, revoke, approvals; policy errors at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedcare.audit import verify_log
from fedcare.cli.main import app
from fedcare.records.study import StudyConfig
from fedcare.strategy.plan import plan_for_study
from fedcare.transport.provisioning import create_federation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"
runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    fed = create_federation(tmp_path / "fed", name="f", sites=["a"], coordinator_hosts=("x",))
    return fed.site_kits["a"]


def test_plan_prints_the_hash_and_a_summary() -> None:
    result = runner.invoke(app, ["site", "plan", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    expected = plan_for_study(StudyConfig.from_yaml(EXAMPLE)).hash
    assert result.stdout.splitlines()[0] == expected
    assert "heart-disease-fedavg" in result.output and "logistic.py" in result.output


def test_decisions_are_stored_listed_and_audited(tmp_path: Path, kit: Path) -> None:
    where = ["--state", str(tmp_path / "state"), "--kit", str(kit)]
    h1, h2 = "1" * 64, "2" * 64
    ok = runner.invoke(app, ["site", "approve", "--study", "s", "--plan", h1,
                             "--until", "2099-01-01", "--note", "ref 7", *where])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(app, ["site", "refuse", "--study", "s", "--plan", h2, *where])
    assert refused.exit_code == 0, refused.output
    assert runner.invoke(app, ["site", "revoke", "--study", "s", *where]).exit_code == 0
    again = runner.invoke(app, ["site", "revoke", "--study", "s", *where])
    assert again.exit_code == 2 and "no approved plan" in again.output
    listed = runner.invoke(app, ["site", "approvals", "--state", str(tmp_path / "state")])
    assert listed.exit_code == 0 and "revoked" in listed.output and "refused" in listed.output
    log = tmp_path / "state" / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in entries] == ["approval", "refusal", "revocation"]
    assert entries[0]["data"]["note"] == "ref 7" and entries[0]["actor"] == "a:steward"
    assert verify_log(log, cert_path=kit / "cert.pem").ok
    bad = runner.invoke(app, ["site", "approve", "--study", "s", "--plan", h1,
                              "--until", "soon", *where])  # fmt: skip
    assert bad.exit_code == 2 and "--until" in bad.output


def test_a_bad_policy_stops_the_agent_at_start_naming_the_field(tmp_path: Path, kit: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_privacy_mode": "strong"}))
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"datasets": {}}))
    where = ["--state", str(tmp_path / "st"), "--policy", str(policy)]
    result = runner.invoke(app, ["site", "start", "--kit", str(kit), "--data", str(data), *where])
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "field min_privacy_mode" in output and "'strong'" in output and str(policy) in output


def test_plan_of_an_analytics_spec_prints_the_hash_its_tasks_carry(tmp_path: Path) -> None:
    from fedcare.analytics.run import analytics_plan
    from fedcare.analytics.spec import AnalyticsSpec
    from fedcare.records.messages import Task
    from fedcare.site.plans import PlanIdentity, identify_plan

    spec_file = tmp_path / "q.yaml"
    body = {"name": "glucose-summary", "dataset": "cdm", "queries": [{"type": "count"}]}
    spec_file.write_text(yaml.safe_dump(body))
    result = runner.invoke(app, ["site", "plan", str(spec_file), "--dataset", "fixture"])
    assert result.exit_code == 0, result.output
    printed = result.stdout.splitlines()[0]
    assert "glucose-summary" in result.output and "'type': 'count'" in result.output
    # the coordinator's tasks for this spec, as run on a federation with --dataset fixture
    spec = AnalyticsSpec.from_dict({**body, "dataset": "fixture"})
    plan = {**analytics_plan(spec), "only": ["q0"], "thresholds": {}}
    task = Task(study_id="j", round=2, site_id="a", kind="analytics", plan=plan)
    identity = identify_plan(task)
    assert isinstance(identity, PlanIdentity)
    assert identity.hash == printed and identity.study == "glucose-summary"
    # another dataset or query is another plan
    other = runner.invoke(app, ["site", "plan", str(spec_file)])
    assert other.exit_code == 0 and other.stdout.splitlines()[0] != printed
    spec_file.write_text(yaml.safe_dump({**body, "queries": [{"type": "count", "name": "n"}]}))
    changed = runner.invoke(app, ["site", "plan", str(spec_file), "--dataset", "fixture"])
    assert changed.stdout.splitlines()[0] != printed


def test_approve_defaults_to_ninety_days_and_finds_the_kit_from_the_state(
    tmp_path: Path, kit: Path
) -> None:
    from datetime import datetime, timedelta, timezone

    from fedcare.cli.governance import build_governance

    state = tmp_path / "state"
    approve = ["site", "approve", "--study", "s", "--plan", "1" * 64, "--state", str(state)]
    lost = runner.invoke(app, approve)
    assert lost.exit_code == 2 and "pass --kit" in lost.output and "kit-path" in lost.output
    build_governance(state, kit, None)  # what `fedcare site start` does: it records its kit
    ok = runner.invoke(app, approve)
    assert ok.exit_code == 0, ok.output
    until = datetime.now(timezone.utc) + timedelta(days=90)
    assert f"until {until:%Y-%m-%d}" in ok.output
    revoked = runner.invoke(app, ["site", "revoke", "--study", "s", "--state", str(state)])
    assert revoked.exit_code == 0 and "revoked 1 approval" in revoked.output, revoked.output


def test_approve_takes_the_study_file_and_approves_the_hash_plan_prints(
    tmp_path: Path, kit: Path
) -> None:
    """A steward approves what they reviewed without typing a hash: `site approve STUDY.yaml`
    computes the hash `site plan` prints and shows it, the summary and the expiry."""
    from fedcare.site.approvals import ApprovalStore

    state = tmp_path / "state"
    where = ["--state", str(state), "--kit", str(kit)]
    shown = runner.invoke(app, ["site", "plan", str(EXAMPLE)]).stdout.splitlines()[0]
    wrong = runner.invoke(app, ["site", "approve", str(EXAMPLE), "--plan", "1" * 64, *where])
    said = " ".join(wrong.output.split())  # rich wraps long lines (never inside the hash)
    assert wrong.exit_code == 2 and f"differs from what {EXAMPLE} gives ({shown})" in said
    neither = runner.invoke(app, ["site", "approve", "--study", "s", *where])
    assert neither.exit_code == 2 and "give the study file" in neither.output
    assert not ApprovalStore.in_state_dir(state).list()  # nothing approved by either
    ok = runner.invoke(app, ["site", "approve", str(EXAMPLE), *where])
    assert ok.exit_code == 0, ok.output
    assert f"approved plan {shown} for 'heart-disease-fedavg' until " in ok.output
    assert "logistic.py" in ok.output  # the summary the steward reviewed
    [row] = ApprovalStore.in_state_dir(state).list()
    assert (row.study, row.plan_hash, row.status) == ("heart-disease-fedavg", shown, "approved")
    same = runner.invoke(app, ["site", "approve", str(EXAMPLE), "--plan", shown, *where])
    assert same.exit_code == 0, same.output


def test_approve_takes_an_analytics_spec_under_its_name(tmp_path: Path, kit: Path) -> None:
    from fedcare.site.approvals import ApprovalStore

    spec_file = tmp_path / "q.yaml"
    spec_file.write_text(
        yaml.safe_dump({"name": "glucose-summary", "queries": [{"type": "count"}]})
    )
    state = tmp_path / "state"
    on = [str(spec_file), "--dataset", "fixture"]
    shown = runner.invoke(app, ["site", "plan", *on]).stdout.splitlines()[0]
    ok = runner.invoke(app, ["site", "approve", *on, "--state", str(state), "--kit", str(kit)])
    assert ok.exit_code == 0, ok.output
    [row] = ApprovalStore.in_state_dir(state).list()
    assert (row.study, row.plan_hash) == ("glucose-summary", shown)
