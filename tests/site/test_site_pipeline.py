"""The site derives every layer of its site half from the approved plan and refuses others."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task
from fedcare.records.plan import TrainingPlan
from fedcare.site.approvals import ApprovalStore
from fedcare.site.mods import approval_mod, chain
from fedcare.site.plans import Refusal, check_task_plan
from fedcare.strategy.driver import study_strategy
from fedcare.strategy.plan import plan_summary
from fedcare.strategy.site_half import (
    check_site_half,
    check_strategy_matches_plan,
    site_pipeline_for,
)

from .governance_helpers import Recorder, plan, study, task

DP = {"noise_multiplier": 1.1, "clip_norm": 0.5}
MODES: dict[str, dict[str, Any]] = {
    "open": {"aggregation": [{"name": "norm_bound", "max_norm": 3.0}]},
    "secure": {"privacy": {"mode": "secure"},
               "aggregation": [{"name": "norm_bound", "max_norm": 2}]},
    "private": {"privacy": {"mode": "private", "dp": DP}, "min_sites": 3},
}  # fmt: skip


def fit_task(p: TrainingPlan, pipeline: dict[str, Any] | None = None) -> Task:
    t = task(task_plan=p.to_task_plan(), config={**p.training, "seed": 1})
    return replace(t, pipeline=site_pipeline_for(p) if pipeline is None else pipeline)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_plan_derives_exactly_the_pipeline_the_driver_sends(mode: str) -> None:
    s = study(**MODES[mode])
    strategy = study_strategy(s, 4)  # raises if its site half differed from the plan's
    p = plan(**MODES[mode])
    assert site_pipeline_for(p) == dict(strategy.aggregator.site_spec())  # type: ignore[attr-defined]
    check_strategy_matches_plan(strategy, p)
    assert isinstance(check_task_plan(fit_task(p)), TrainingPlan)


def test_every_release_parameter_is_in_the_hash_and_the_summary() -> None:
    private = plan(**MODES["private"])
    variants = [
        plan(privacy={"mode": "private", "dp": {**DP, "noise_multiplier": 0.5}}, min_sites=3),
        plan(privacy={"mode": "private", "dp": {**DP, "clip_norm": 1.0}}, min_sites=3),
        plan(privacy={"mode": "private", "dp": DP}, min_sites=2),  # noise split over 2 sites
        plan(privacy={"mode": "secure"}),
        plan(aggregation=[{"name": "norm_bound", "max_norm": 4.0}]),
        plan(aggregation=[{"name": "norm_bound", "max_norm": 3.0}]),
    ]
    assert len({private.hash, *(v.hash for v in variants)}) == 1 + len(variants)
    text = plan_summary(private)
    assert "Gaussian noise (multiplier 1.1, split over 3 sites)" in text
    assert "clip to norm 0.5" in text and "masked (secure aggregation v1" in text
    assert "site half:     clip to norm 3" in plan_summary(variants[-1])
    assert "none (the update leaves as trained)" in plan_summary(plan())


@pytest.mark.parametrize(
    ("mode", "tamper", "needle"),
    [
        ("secure", lambda p: {}, "secagg missing (plan: {'version': 1"),
        ("secure", lambda p: {k: v for k, v in p.items() if k != "norm_bound"},
         "norm_bound missing"),
        ("private", lambda p: {k: v for k, v in p.items() if k != "distributed_dp"},
         "distributed_dp missing"),
        ("private", lambda p: {**p, "distributed_dp": {**p["distributed_dp"], "site_std": 0.0}},
         "distributed_dp is {"),
        ("private", lambda p: {**p, "norm_bound": {"version": 1, "max_norm": 1e9}},
         "norm_bound is {'version': 1, 'max_norm': 1000000000.0}"),
        ("open", lambda p: {**p, "norm_bound": {"version": 1, "max_norm": 0.01}}, "norm_bound is"),
        ("open", lambda p: {**p, "secagg": {"version": 1, "clip": 1.0, "bits": 8}}, "secagg added"),
    ],
)  # fmt: skip
def test_a_fit_task_with_another_pipeline_is_refused_naming_the_difference(
    mode: str, tamper: Any, needle: str
) -> None:
    p = plan(**MODES[mode])
    refusal = check_task_plan(fit_task(p, tamper(site_pipeline_for(p))))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-pipeline-mismatch"
    assert needle in refusal.message and repr(mode) in refusal.message


def test_the_he_fingerprint_comes_from_the_task_every_other_value_from_the_plan() -> None:
    p = plan(privacy={"mode": "encrypted"})
    good = site_pipeline_for(p, he_fingerprint="f" * 16)
    assert good["he"] == {"version": 1, "scheme": "ckks", "weight_unit": 1000.0,
                          "fingerprint": "f" * 16}  # fmt: skip
    assert isinstance(check_task_plan(fit_task(p, good)), TrainingPlan)
    for bad in ({}, {"he": {**good["he"], "weight_unit": 1e-9}}):
        refusal = check_task_plan(fit_task(p, bad))
        assert isinstance(refusal, Refusal) and refusal.kind == "plan-pipeline-mismatch"


def test_a_plan_whose_site_half_does_not_match_its_mode_is_invalid() -> None:
    secure = plan(privacy={"mode": "secure"})
    hollow = replace(secure, site_half={**secure.site_half, "secagg": None})
    refusal = check_task_plan(fit_task(hollow, {}))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-invalid"
    assert "privacy mode 'secure' needs a 'secagg' entry" in refusal.message
    with pytest.raises(ConfigError, match="has no 'distributed_dp' layer"):
        check_site_half("open", {"distributed_dp": dict(DP, min_sites=1)})
    with pytest.raises(ConfigError, match="unknown entries"):
        check_site_half("open", {"compress": 1})


def test_a_secure_aggregation_task_for_a_plan_without_one_is_refused() -> None:
    t = replace(task(task_plan=plan().to_task_plan(), config={"seed": 1}), kind="secagg")
    refusal = check_task_plan(t)
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-pipeline-mismatch"


def test_the_governed_task_carries_the_derived_pipeline_and_a_refusal_is_audited(
    tmp_path: Path,
) -> None:
    seen: list[Task] = []

    def runtime(t: Task) -> Reply:
        seen.append(t)
        return Reply(t.study_id, t.round, t.site_id, t.kind, num_samples=10)

    audit = Recorder()
    handler = chain(
        [approval_mod(ApprovalStore.in_state_dir(tmp_path), audit, approve_all=True)], runtime
    )
    p = plan(**MODES["private"])
    assert handler(fit_task(p)).ok and seen[-1].pipeline == site_pipeline_for(p)
    stripped = handler(fit_task(p, {}))
    assert stripped.error is not None and stripped.error.kind == "plan-pipeline-mismatch"
    assert len(seen) == 1  # the stripped task never ran
    assert audit.last("decision")["outcome"] == "refused"
    assert audit.last("decision")["reason_kind"] == "plan-pipeline-mismatch"


def test_the_driver_refuses_to_send_what_the_plan_does_not_fix() -> None:
    open_strategy = study_strategy(study(), 4)
    with pytest.raises(ConfigError, match="site half differs from the plan's: secagg missing"):
        check_strategy_matches_plan(open_strategy, plan(privacy={"mode": "secure"}))
    prox = plan(strategy={"name": "fedprox", "options": {"mu": 0.5}})
    with pytest.raises(ConfigError, match="the strategy sends fit config"):
        check_strategy_matches_plan(open_strategy, prox)
