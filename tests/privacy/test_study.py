"""privacy.dp in a study file: validation, the layers it builds, and results end to end."""

import math
from typing import Any

import pytest

from fedcare.aggregation.adaptive_clip import AdaptiveClip
from fedcare.aggregation.gaussian_noise import GaussianNoise
from fedcare.errors import ConfigError
from fedcare.privacy.accounting import DpEvent, rdp_epsilon
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from fedcare.strategy.driver import study_strategy


def study(dp: dict[str, Any] | None, **extra: Any) -> StudyConfig:
    data: dict[str, Any] = {
        "name": "dp-test",
        "dataset": {"name": "synthetic", "options": {"num_sites": 3, "rows_per_site": 80}},
        "model": {"kind": "logistic"},
        "training": {"epochs": 1, "lr": 0.2, "batch_size": 10},
        "rounds": 3,
        "privacy": {"mode": "open", "dp": dp},
        **extra,
    }
    return StudyConfig.from_dict(data)


def test_study_file_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="clip_norm or adaptive, not both"):
        study({"noise_multiplier": 1.0, "clip_norm": 1.0, "adaptive": {}})
    with pytest.raises(ConfigError, match="central DP needs clip_norm or adaptive"):
        study({"noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match=r"privacy.dp.local_dp_sgd.*noise_multiplier or target"):
        study({"local_dp_sgd": {"max_grad_norm": 1.0}})
    with pytest.raises(ConfigError, match=r"privacy\.dp\.delta"):
        study({"delta": 2.0})


def test_driver_builds_the_central_layers() -> None:
    fixed = study_strategy(study({"noise_multiplier": 1.0, "clip_norm": 0.5}), 3)
    assert isinstance(fixed.aggregator.inner, GaussianNoise)  # type: ignore[attr-defined]
    assert fixed.aggregator.inner.expected_sites == 3  # type: ignore[attr-defined]
    adaptive = study_strategy(
        study({"target_epsilon": 2.0, "adaptive": {"count_noise_std": 10.0}}), 3
    )
    assert isinstance(adaptive.aggregator.inner, AdaptiveClip)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"count_noise_std 1\.0 must exceed"):
        study_strategy(study({"target_epsilon": 2.0, "adaptive": {}}), 3)
    with pytest.raises(ConfigError, match="trusted coordinator"):
        s = study({"noise_multiplier": 1.0, "clip_norm": 0.5})
        study_strategy(s.with_overrides(privacy={"mode": "secure", "dp": s.privacy.dp}), 3)


def test_local_dp_sgd_goes_into_the_task_config() -> None:
    s = study({"local_dp_sgd": {"target_epsilon": 1.0, "max_grad_norm": 2.0}})
    train = study_strategy(s, 3).train
    assert train["dp_target_epsilon"] == 1.0 and train["dp_rounds"] == 3
    assert train["dp_max_grad_norm"] == 2.0 and train["dp_delta"] == 1e-5


def test_central_dp_results_report_epsilon_per_round() -> None:
    results = run_simulation(study({"noise_multiplier": 1.0, "clip_norm": 0.5}))
    privacy = results["privacy"]
    expected = [rdp_epsilon([DpEvent(1.0, 1.0, r)], 1e-5) for r in (1, 2, 3)]
    got = [r["study_epsilon"] for r in privacy["per_round"]]
    assert got == pytest.approx(expected, rel=1e-9)
    assert privacy["study_epsilon"] == pytest.approx(expected[-1], rel=1e-9)
    fit = results["history"][0]["fit"]
    assert fit["noise_std"] == pytest.approx(0.5) and fit["denominator"] == 3
    assert [h["fit"]["epsilon"] for h in results["history"]] == pytest.approx(expected)


def test_dp_sgd_results_report_epsilon_per_site_and_membership() -> None:
    s = study(
        {"local_dp_sgd": {"target_epsilon": 1.0, "max_grad_norm": 1.0}},
    ).with_overrides(
        privacy={
            "mode": "open",
            "dp": {"local_dp_sgd": {"target_epsilon": 1.0, "max_grad_norm": 1.0}},
            "membership_inference": True,
        }
    )
    results = run_simulation(s)
    privacy = results["privacy"]
    assert privacy["study_epsilon"] is None
    assert sorted(privacy["site_epsilon"]) == results["sites"]
    for eps in privacy["site_epsilon"].values():  # calibrated: 3 rounds spend the target
        assert eps == pytest.approx(1.0, abs=0.01)
    curve = [r["site_epsilon"]["site-0"] for r in privacy["per_round"]]
    assert curve == sorted(curve) and not math.isinf(curve[-1])
    mia = results["membership_inference"]
    assert set(mia["per_site"]) == set(results["sites"])
    assert 0.0 <= mia["loss_threshold_auroc"] <= 1.0
