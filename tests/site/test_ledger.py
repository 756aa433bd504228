"""The site's privacy ledger and the budget mod that refuses an overspend before training."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.private_sum import PrivateSum
from fedcare.cli.main import app
from fedcare.errors import ValidationError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import ledger_epsilon
from fedcare.records.messages import Reply, Task
from fedcare.secure.secagg.layer import SecureSum
from fedcare.site.approvals import ApprovalStore
from fedcare.site.governance import SiteGovernance
from fedcare.site.ledger import LEDGER_FILE, SiteLedger, task_events
from fedcare.site.mods import chain
from fedcare.site.policy import SitePolicy

from .governance_helpers import Recorder, plan, task

ROWS = {"heart-disease": 100}
Z = 1.5


def private_task(round: int = 1, study_id: str = "st-1", z: float = Z) -> Task:
    pipeline = PrivateSum(WeightedMean(), noise_multiplier=z, clip_norm=0.5, min_sites=3)
    the_plan = plan(
        privacy={"mode": "private", "dp": {"noise_multiplier": z, "clip_norm": 0.5}}, min_sites=3
    )
    t = task(task_plan=the_plan.to_task_plan(), round=round)
    config = {**t.config, "secagg_stage": "mask", "secagg_header": "{}"}  # as SecAgg sends it
    spec = {**pipeline.site_spec(), **SecureSum(pipeline).site_spec()}  # as the driver sends it
    return replace(t, study_id=study_id, pipeline=spec, config=config)


class Trainer:
    """The runtime stand-in: records whether training (fit) ran."""

    def __init__(self) -> None:
        self.ran: list[Task] = []

    def __call__(self, t: Task) -> Reply:
        self.ran.append(t)
        return Reply(t.study_id, t.round, t.site_id, t.kind, num_samples=100)


def governed(tmp_path: Path, caps: dict[str, float] | None = None) -> tuple[Any, Recorder, Trainer]:
    audit, trainer = Recorder(), Trainer()
    gov = SiteGovernance(
        SitePolicy.from_dict({"epsilon_cap": caps or {}}),
        ApprovalStore.in_state_dir(tmp_path),
        audit,
        approve_all=True,
        ledger=SiteLedger.in_state_dir(tmp_path),
    )
    handler = chain(gov.mods(ROWS), lambda t: gov.execute(t, trainer, lambda: None))
    return handler, audit, trainer


def test_spends_persist_across_reopen_and_compose_across_studies(tmp_path: Path) -> None:
    ledger = SiteLedger.in_state_dir(tmp_path)
    e = DpEvent(Z)
    for study_id, rnd in [("s1", 1), ("s1", 2), ("s2", 1)]:
        d = ledger.spend(
            "heart-disease", study_id=study_id, study="x", round=rnd, events=[e], cap=None
        )
        assert d.ok and not d.already
    reopened = SiteLedger(tmp_path / LEDGER_FILE)
    three = ledger_epsilon([e, e, e])
    assert reopened.spent("heart-disease") == pytest.approx(three, rel=1e-9)
    assert three < 3 * ledger_epsilon([e])  # composed as events, tighter than adding epsilons
    (line,) = reopened.summary()
    assert (line.dataset, line.studies, line.rounds) == ("heart-disease", 2, 3)
    assert line.epsilon == pytest.approx(three, rel=1e-9)
    assert reopened.spent("eicu") == 0.0


def test_a_retried_task_spends_once(tmp_path: Path) -> None:
    handler, audit, trainer = governed(tmp_path)
    first, again = handler(private_task()), handler(private_task())
    assert first.ok and again.ok and len(trainer.ran) == 2
    ledger = SiteLedger.in_state_dir(tmp_path)
    assert len(ledger.spends()) == 1
    assert ledger.spent("heart-disease") == pytest.approx(ledger_epsilon([DpEvent(Z)]), rel=1e-9)
    spends = [d for e, d in audit.entries if e == "privacy-spend"]
    assert [s["already_recorded"] for s in spends] == [False, True]
    assert spends[0]["epsilon_spent"] == spends[1]["epsilon_spent"]
    assert float(first.info["epsilon_spent"]) == pytest.approx(spends[0]["epsilon_spent"])


def test_the_round_that_would_overspend_is_refused_before_training(tmp_path: Path) -> None:
    one = ledger_epsilon([DpEvent(Z)])
    two = ledger_epsilon([DpEvent(Z)] * 2)
    cap = (one + two) / 2  # room for one round, not two
    handler, audit, trainer = governed(tmp_path, {"heart-disease": cap})
    assert handler(private_task(1, study_id="other")).ok
    reply = handler(private_task(1))
    assert reply.error is not None and reply.error.kind == "privacy-budget-exceeded"
    assert reply.error.message == (
        f"dataset heart-disease: this round would bring epsilon to {two:.3g} "
        f"(cap {cap:g}; spent {one:.3g} across 1 study)"
    )
    assert len(trainer.ran) == 1  # only the first study's task trained
    assert audit.last("decision")["reason_kind"] == "privacy-budget-exceeded"
    assert len(SiteLedger.in_state_dir(tmp_path).spends()) == 1  # a refusal spends nothing


def test_tasks_without_dp_spend_nothing_and_dp_sgd_is_counted(tmp_path: Path) -> None:
    handler, _, trainer = governed(tmp_path, {"heart-disease": 0.1})
    assert handler(task()).ok and handler(task("evaluate")).ok
    assert len(trainer.ran) == 2  # a cap does not stop tasks that spend no epsilon
    assert SiteLedger.in_state_dir(tmp_path).spends() == []
    dp_sgd = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5}
    t = replace(private_task(), config={**private_task().config, **dp_sgd, "dp_rounds": 5})
    events = task_events(t, 100)
    assert len(events) == 2 and events[0].noise_multiplier == pytest.approx(Z)
    assert events[1].sampling_probability < 1  # DP-SGD: sampled, several steps
    assert task_events(task("evaluate"), 100) == []


def test_the_site_derives_the_round_event_from_its_noise_share() -> None:
    (event,) = task_events(private_task(z=0.7), None)
    assert event.noise_multiplier == pytest.approx(0.7, rel=1e-12)
    assert math.isclose(ledger_epsilon([event]), ledger_epsilon([DpEvent(0.7)]), rel_tol=1e-9)


def test_site_budget_command_shows_the_ledger(tmp_path: Path) -> None:
    ledger = SiteLedger.in_state_dir(tmp_path)
    ledger.spend("heart-disease", study_id="s1", study="x", round=1, events=[DpEvent(Z)], cap=None)
    policy = tmp_path / "policy.yaml"
    policy.write_text("epsilon_cap: {heart-disease: 9.0}\n", encoding="utf-8")
    args = ["site", "budget", "--state", str(tmp_path), "--policy", str(policy), "--detail"]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    eps = ledger_epsilon([DpEvent(Z)])
    assert "heart-disease" in out.output and f"{eps:.3g}" in out.output
    assert f"{9.0 - eps:.3g}" in out.output and "s1" in out.output


def test_a_task_the_site_cannot_account_is_refused(tmp_path: Path) -> None:
    handler, _, trainer = governed(tmp_path)
    bad = {"distributed_dp": {"version": 1, "clip_norm": 1.0, "site_std": 0.5}}  # no min_sites
    with pytest.raises(ValidationError, match="min_sites must be >= 1, got None"):
        task_events(replace(private_task(), pipeline=bad), 100)
    # under governance the pipeline is the plan's, so such a task never reaches the ledger
    reply = handler(replace(private_task(), pipeline=bad))
    assert reply.error is not None and reply.error.kind == "plan-pipeline-mismatch"
    assert trainer.ran == []
