"""Privacy modes as preset compositions (fedcare.strategy.modes), and how the loop picks the
multi-stage protocol runner from the aggregator (``Aggregator.multistage``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pytest

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.private_sum import PrivateSum
from fedcare.aggregation.validate import ValidateUpdates
from fedcare.errors import ConfigError
from fedcare.privacy.guard import planned_round_events
from fedcare.records import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.secure.he.layer import EncryptedSum
from fedcare.secure.secagg.layer import SecureSum
from fedcare.strategy import FedAvg, RoundConfig, run_round
from fedcare.strategy.driver import study_strategy
from fedcare.strategy.encrypted import run_encrypted_sum
from fedcare.strategy.loop import protocol_runner
from fedcare.strategy.modes import (
    AVAILABLE_PRIVACY_MODES,
    mode_composition,
    site_half_of,
)
from fedcare.strategy.multistage import run_secure_sum
from fedcare.strategy.plan import plan_for_study

from .helpers import PARAMS, fixed_grid

BASE: dict[str, Any] = {
    "name": "modes",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 3,
    "training": {"epochs": 1, "lr": 0.1},
    "min_sites": 3,
}
DP = {"noise_multiplier": 2.0, "clip_norm": 1.0, "delta": 1e-5}


def _study(mode: str, **extra: Any) -> StudyConfig:
    privacy: dict[str, Any] = {"mode": mode}
    if mode == "private":
        privacy["dp"] = DP
    return StudyConfig.from_dict({**BASE, "privacy": privacy, **extra})


def test_each_mode_reads_as_its_layers() -> None:
    open_ = mode_composition(_study("open"), 4)
    assert isinstance(open_.aggregator, ValidateUpdates)
    assert isinstance(open_.aggregator.inner, WeightedMean)
    assert open_.accounting.round_events == () and open_.min_sites == 3

    private = mode_composition(_study("private"), 2)
    assert isinstance(private.aggregator, ValidateUpdates)
    assert isinstance(private.aggregator.inner, PrivateSum)
    assert private.min_sites == 3  # the noise is split over min_sites, whatever num_sites is
    assert [e.noise_multiplier for e in private.accounting.round_events] == [2.0]
    assert private.site_half["distributed_dp"] == {
        "noise_multiplier": 2.0,
        "clip_norm": 1.0,
        "min_sites": 3,
    }
    assert mode_composition(_study("secure"), 2).min_sites == 2  # capped by num_sites


@pytest.mark.parametrize("mode", AVAILABLE_PRIVACY_MODES)
def test_the_composition_is_what_plan_strategy_and_guard_use(mode: str) -> None:
    study = _study(mode, aggregation=[{"name": "norm_bound", "max_norm": 2.0}])
    if mode == "private":
        study = _study(mode)
    composed = mode_composition(study, 4)
    assert dict(composed.site_half) == plan_for_study(study).site_half == site_half_of(study)
    assert list(composed.accounting.round_events) == planned_round_events(study)
    strategy: Any = study_strategy(study, 4)
    outer = {"secure": SecureSum, "private": SecureSum, "encrypted": EncryptedSum}.get(mode)
    if outer is None:
        assert type(strategy.aggregator) is type(composed.aggregator) is ValidateUpdates
        assert protocol_runner(strategy) is None
    else:
        assert isinstance(strategy.aggregator, outer)
        expected = run_encrypted_sum if mode == "encrypted" else run_secure_sum
        assert protocol_runner(strategy) is expected


class _Bogus(Aggregator[Any]):
    """A layer naming a multi-stage protocol no runner exists for."""

    def __init__(self) -> None:
        self.inner = WeightedMean()

    def init(self, template: ArrayRecord) -> Any:
        return self.inner.init(template)

    def update(
        self, state: Any, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, Any, Measurements]:
        return self.inner.update(state, contributions)

    def site_spec(self) -> Mapping[str, Any]:
        return {}

    def multistage(self) -> str:
        return "bogus_sum"


def test_the_loop_asks_the_aggregator_which_protocol_to_run() -> None:
    grid = fixed_grid({"a": ([1.0, 0.0], 1), "b": ([0.0, 1.0], 1)})
    strategy = FedAvg(aggregator=_Bogus())
    state = strategy.init_state(PARAMS)
    cfg = RoundConfig(study_id="s", num_rounds=1, seed=0)
    with pytest.raises(ConfigError, match=r"multi-stage protocol 'bogus_sum'; this loop runs"):
        run_round(grid, strategy, state, cfg, 1)
    plain = FedAvg(aggregator=ValidateUpdates(WeightedMean()))
    new_state, _ = run_round(grid, plain, plain.init_state(PARAMS), cfg, 1)
    np.testing.assert_allclose(new_state.params["w"], [0.5, 0.5])


def test_secagg_settings_reach_protocol_plan_and_hash() -> None:
    default = _study("secure")
    chosen = _study("secure", privacy={"mode": "secure", "secagg": {"neighbours": 14}})
    assert set(plan_for_study(default).site_half["secagg"]) == {"version", "clip", "bits"}
    assert plan_for_study(chosen).site_half["secagg"]["neighbours"] == 14
    assert plan_for_study(chosen).hash != plan_for_study(default).hash
    strategy: Any = study_strategy(chosen, 100)  # checks the strategy against the plan
    assert strategy.aggregator.protocol.degree == 14
    assert strategy.aggregator.site_spec()["secagg"]["neighbours"] == 14
    assert study_strategy(default, 100).aggregator.protocol.degree is None  # per round, as before


def test_secagg_settings_are_checked_against_the_number_of_sites() -> None:
    study = _study("secure", privacy={"mode": "secure", "secagg": {"neighbours": 10}})
    mode_composition(study, 30)  # 10 >= 2 ceil(log2 30) = 10
    with pytest.raises(ConfigError, match=r"neighbours=10 is below 14 = 2 ceil\(log2 100\)"):
        mode_composition(study, 100)
