"""Compression is negotiated per study through the plan: in its hash only when set, stated to the
steward, derived by the sites, refused where updates are not sent as arrays."""

from __future__ import annotations

from typing import Any

import pytest

from fedcare.aggregation.compression import Decompress
from fedcare.errors import ConfigError
from fedcare.records.plan import TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import check_privacy_mode, study_strategy
from fedcare.strategy.plan import plan_for_study, plan_summary
from fedcare.strategy.site_half import check_site_half, pipeline_differences, site_pipeline_for

BASE: dict[str, Any] = {
    "name": "golden",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 5,
}
#: Plan hashes (without the code part) of studies without compression, computed before
#: compression existed (main at 30580cb): they must not change.
GOLDEN = [
    ({}, "3762615df683be6cb847f5d399e1908c011830fb9f37b4a747cea655987fc73d"),
    (
        {"privacy": {"mode": "secure"}},
        "80ac0ea43b573053b03d8e93d1ecc9192f0790d56b33fa62e5f43a4fa6ee9bc2",
    ),
    (
        {"aggregation": [{"name": "norm_bound", "max_norm": 2.0}]},
        "090ee355ffcdc61aa7950f9a5fd520ed215c2226f2479e2592039bce860e7f5b",
    ),
]


def study(**extra: Any) -> StudyConfig:
    return StudyConfig.from_dict({**BASE, **extra})


@pytest.mark.parametrize(("extra", "expected"), GOLDEN)
def test_plans_without_compression_keep_their_hash(extra: dict, expected: str) -> None:
    assert plan_for_study(study(**extra), with_code=False).hash == expected
    explicit = study(**extra, compression={"method": "none"})
    assert plan_for_study(explicit, with_code=False).hash == expected
    assert "compression" not in plan_for_study(explicit).site_half


def test_each_method_and_ratio_is_in_the_hash() -> None:
    specs = [{"method": m} for m in ("fp16", "bf16", "int8")]
    specs += [{"method": "topk"}, {"method": "topk", "ratio": 0.2}]
    hashes = {plan_for_study(study(compression=s), with_code=False).hash for s in specs}
    assert len(hashes) == len(specs) and GOLDEN[0][1] not in hashes
    plan = plan_for_study(study(compression={"method": "topk"}))
    assert plan.site_half["compression"] == {"method": "topk", "ratio": 0.1}
    again = TrainingPlan.from_task_plan(plan.to_task_plan())  # as a site reads it
    assert again.hash == plan.hash


@pytest.mark.parametrize("method", ["fp16", "bf16", "int8", "topk"])
def test_strategy_sends_the_pipeline_the_sites_derive_from_the_plan(method: str) -> None:
    s = study(compression={"method": method})
    strategy = study_strategy(s, 4)  # checks its site half against the plan's
    aggregator = strategy.aggregator  # type: ignore[attr-defined]
    assert isinstance(aggregator, Decompress)  # outermost: decodes before validation
    derived = site_pipeline_for(plan_for_study(s))
    assert derived == dict(aggregator.site_spec())
    assert derived["compression"]["method"] == method
    # a coordinator that leaves compression out is refused by the site's pipeline check
    assert pipeline_differences(derived, {}) == [
        f"compression missing (plan: {derived['compression']!r})"
    ]


def test_steward_summary_states_the_compression() -> None:
    text = plan_summary(plan_for_study(study(compression={"method": "int8"})))
    line = next(x for x in text.splitlines() if x.startswith("site half:"))
    assert "compressed: 8-bit quantization, one scale per array" in line
    assert "error feedback" in line
    fp16 = plan_summary(plan_for_study(study(compression={"method": "fp16"})))
    assert "half precision (float16)" in fp16 and "error feedback" not in fp16
    assert "site half:     none" in plan_summary(plan_for_study(study()))


@pytest.mark.parametrize("mode", ["secure", "encrypted"])
def test_masked_or_encrypted_modes_refuse_compression(mode: str) -> None:
    s = study(privacy={"mode": mode}, compression={"method": "fp16"})
    with pytest.raises(ConfigError, match=r"cannot be \(set compression\.method to 'none'\)"):
        check_privacy_mode(s)  # what the coordinator checks at submission
    with pytest.raises(ConfigError, match=f"works in privacy mode 'open' only; in mode '{mode}'"):
        study_strategy(s, 4)
    with pytest.raises(ConfigError, match="works in privacy mode 'open' only"):
        plan_for_study(s)
    with pytest.raises(ConfigError, match=f"privacy mode '{mode}' has no 'compression' layer"):
        check_site_half(
            mode,
            {
                "secagg" if mode == "secure" else "he": {"version": 1},
                "compression": {"method": "fp16"},
            },
        )


def test_study_file_checks() -> None:
    assert study(compression={"method": "topk"}).compression.ratio == 0.1
    with pytest.raises(ConfigError, match="ratio is for method topk only"):
        study(compression={"method": "int8", "ratio": 0.5})
    with pytest.raises(ConfigError, match="compression"):
        study(compression={"method": "zip"})
    with pytest.raises(ConfigError, match="plan site_half: 'compression' has unknown keys"):
        site_pipeline_for(
            TrainingPlan(
                "x", {}, {}, {}, 1, "d", site_half={"compression": {"method": "fp16", "x": 1}}
            )
        )
