"""FedBuff's math (staleness weighting, the buffered server step), screening, options and the
privacy modes it refuses (fedcare.strategy.fedbuff)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedcare.errors import AggregationError, ConfigError, ValidationError
from fedcare.records import ArrayRecord, Reply
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import study_strategy
from fedcare.strategy.fedbuff import (
    BufferedUpdate,
    FedBuff,
    fedbuff_step,
    staleness_weight,
    update_problem,
)
from fedcare.strategy.registry import build_strategy

BASE: dict[str, Any] = {
    "name": "fedbuff-modes",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 3,
    "training": {"epochs": 1, "lr": 0.1},
    "min_sites": 2,
    "strategy": {"name": "fedbuff", "options": {"buffer_size": 2, "concurrency": 3}},
}


def _study(**extra: Any) -> StudyConfig:
    return StudyConfig.from_dict({**BASE, **extra})


def _update(site: str, sent: int, staleness: int, w: list[float], n: int = 10) -> BufferedUpdate:
    return BufferedUpdate(site, sent, staleness, ArrayRecord({"w": np.array(w)}), n)


def test_staleness_weight_is_one_over_sqrt_one_plus_tau() -> None:
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3) == 0.5
    assert staleness_weight(8) == pytest.approx(1 / 3)
    with pytest.raises(ValidationError, match="staleness must be >= 0, got -1"):
        staleness_weight(-1)
    with pytest.raises(ValidationError, match="must be an integer"):
        staleness_weight(1.5)  # type: ignore[arg-type]


def test_server_step_matches_a_hand_computed_staleness_weighted_update() -> None:
    params = ArrayRecord({"w": np.array([1.0, -2.0, 0.5], dtype=np.float32)})
    buffer = [
        _update("a", 4, 0, [0.3, 0.0, -0.6], n=10),  # s = 1
        _update("b", 1, 3, [1.0, 2.0, 4.0], n=30),  # s = 1/2
        _update("c", 2, 2, [-0.9, 0.3, 0.0], n=60),  # s = 1/sqrt(3)
    ]
    s3 = 1 / math.sqrt(3)
    # x + eta/K * sum s_i delta_i with eta = 0.5, K = 3
    expected = [
        1.0 + 0.5 / 3 * (0.3 + 0.5 * 1.0 - s3 * 0.9),
        -2.0 + 0.5 / 3 * (0.0 + 0.5 * 2.0 + s3 * 0.3),
        0.5 + 0.5 / 3 * (-0.6 + 0.5 * 4.0 + 0.0),
    ]
    out = fedbuff_step(params, buffer, server_lr=0.5)
    assert out["w"].dtype == np.float32
    np.testing.assert_allclose(out["w"], expected, rtol=1e-6)
    np.testing.assert_array_equal(params["w"], np.array([1.0, -2.0, 0.5], dtype=np.float32))
    # by rows: sum s_i n_i delta_i / sum n_i
    rows = fedbuff_step(params, buffer, server_lr=0.5, weighting="rows")
    by_rows = [
        1.0 + 0.5 * (10 * 0.3 + 30 * 0.5 * 1.0 - 60 * s3 * 0.9) / 100,
        -2.0 + 0.5 * (0.0 + 30 * 0.5 * 2.0 + 60 * s3 * 0.3) / 100,
        0.5 + 0.5 * (10 * -0.6 + 30 * 0.5 * 4.0) / 100,
    ]
    np.testing.assert_allclose(rows["w"], by_rows, rtol=1e-6)
    with pytest.raises(AggregationError, match="at least one buffered update"):
        fedbuff_step(params, [], server_lr=1.0)


def _reply(arrays: dict[str, Any], n: int = 5, site: str = "a") -> Reply:
    return Reply("s", 1, site, "fit", arrays=ArrayRecord(arrays), num_samples=n)


def test_update_screening_names_each_problem() -> None:
    template = ArrayRecord({"w": np.zeros(2)})
    assert update_problem(template, _reply({"w": np.ones(2)}), {"a": 5}) is None
    assert "dtypes {'w': 'float32'}" in str(
        update_problem(template, _reply({"w": np.ones(2, dtype=np.float32)}), {})
    )
    assert "NaN or infinite values in ['w']" in str(
        update_problem(template, _reply({"w": np.array([1.0, np.nan])}), {})
    )
    assert "update from site 'a'" in str(update_problem(template, _reply({"w": np.ones(3)}), {}))
    assert "update from site 'a'" in str(update_problem(template, _reply({"v": np.ones(2)}), {}))
    assert "num_samples 9, more than the 5 training rows" in str(
        update_problem(template, _reply({"w": np.ones(2)}, n=9), {"a": 5})
    )


def test_options_come_from_the_study_and_are_checked() -> None:
    strategy = build_strategy(
        "fedbuff", {"buffer_size": 3, "concurrency": 5, "server_lr": 0.5, "max_staleness": 4}
    )
    assert isinstance(strategy, FedBuff)
    assert (strategy.buffer_size, strategy.concurrency, strategy.server_lr) == (3, 5, 0.5)
    assert strategy.max_staleness == 4 and strategy.site_config()["algorithm"] == "fedavg"
    built = study_strategy(_study(), 4)
    assert isinstance(built, FedBuff) and built.buffer_size == 2 and built.concurrency == 3
    bad = [
        ({"buffer_size": 0}, "buffer_size must be an integer >= 1, got 0"),
        ({"concurrency": 2.5}, "concurrency must be an integer >= 1, got 2.5"),
        ({"server_lr": -1}, "server_lr must be a number > 0, got -1"),
        ({"max_staleness": -2}, "max_staleness must be an integer >= 0 or null, got -2"),
        ({"weighting": "sites"}, "weighting must be 'uniform' or 'rows', got 'sites'"),
    ]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build_strategy("fedbuff", options)
    with pytest.raises(ConfigError, match=r"has no option\(s\) \['buffer'\]"):
        build_strategy("fedbuff", {"buffer": 2})


@pytest.mark.parametrize(
    ("privacy", "reason"),
    [
        ({"mode": "secure"}, "masks cancel only when a fixed cohort's masked inputs"),
        (
            {
                "mode": "private",
                "dp": {"noise_multiplier": 2.0, "clip_norm": 1.0, "delta": 1e-5},
            },
            "noise is shared among a fixed cohort",
        ),
        ({"mode": "encrypted"}, "decrypt only a cohort's summed ciphertext"),
        (
            {"mode": "open", "dp": {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5}},
            "central DP's accountant assumes a cohort sampled per round",
        ),
    ],
)
def test_privacy_modes_fedbuff_cannot_run_are_refused_with_the_reason(
    privacy: dict[str, Any], reason: str
) -> None:
    study = _study(privacy=privacy)
    with pytest.raises(ConfigError, match="strategy 'fedbuff'") as info:
        study_strategy(study, 4)
    assert reason in str(info.value)


def test_open_mode_with_local_dp_sgd_runs_and_layers_are_refused() -> None:
    dp_sgd = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}
    local = {"mode": "open", "dp": {"local_dp_sgd": dp_sgd, "delta": 1e-5}}
    plain = study_strategy(_study(), 4)
    strategy = study_strategy(_study(privacy=local), 4)
    assert isinstance(strategy, FedBuff)
    added = set(strategy.site_config()) - set(plain.site_config())  # type: ignore[attr-defined]
    assert added  # the sites' DP-SGD settings travel in every fit task
    with pytest.raises(ConfigError, match="takes no aggregation layers"):
        study_strategy(_study(aggregation=[{"name": "median"}]), 4)
    with pytest.raises(ConfigError, match="does not decode compressed updates"):
        study_strategy(_study(compression={"method": "fp16"}), 4)
