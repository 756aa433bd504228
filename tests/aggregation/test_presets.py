from functools import partial

import numpy as np
import pytest

from fedcare.aggregation import (
    Contribution,
    CoordinateMedian,
    MultiKrum,
    NormBound,
    TrimmedMean,
    ValidateUpdates,
    WeightedMean,
    build_aggregator,
    chain,
)
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.study import StudyConfig
from fedcare.strategy import RoundConfig, run_rounds
from fedcare.strategy.checkpoint import state_from_record, state_to_record
from fedcare.strategy.driver import study_strategy

from ..strategy.helpers import fixed_grid
from .helpers import TEMPLATE, contributions, flat, honest_and_outlier, record

STUDY = {"name": "s", "dataset": {"name": "synthetic"}, "model": {"kind": "logistic"}}


def study(aggregation: list) -> StudyConfig:
    return StudyConfig.from_dict({**STUDY, "aggregation": aggregation})


def test_the_stack_is_built_outermost_first_with_validation_around_it() -> None:
    agg = build_aggregator(
        study(
            [{"name": "norm_bound", "max_norm": 5}, {"name": "krum", "num_byzantine": 2}]
        ).aggregation
    )
    assert isinstance(agg, ValidateUpdates)
    assert isinstance(agg.inner, NormBound) and agg.inner.max_norm == 5.0
    krum = agg.inner.inner
    assert isinstance(krum, MultiKrum) and krum.num_byzantine == 2
    assert isinstance(krum.inner, WeightedMean)
    assert isinstance(build_aggregator([]).inner, WeightedMean)
    median = build_aggregator(study([{"name": "median"}]).aggregation)
    assert isinstance(median.inner, CoordinateMedian)


def test_a_study_stack_equals_the_same_chain_by_hand() -> None:
    matrix = honest_and_outlier(3, 5, 60.0)
    specs = study([{"name": "norm_bound", "max_norm": 4.0}, {"name": "trimmed_mean", "count": 1}])
    built = build_aggregator(specs.aggregation)
    by_hand = chain(ValidateUpdates, partial(NormBound, max_norm=4.0), inner=TrimmedMean(count=1))
    a, _, ma = built.update(built.init(TEMPLATE), contributions(matrix))
    b, _, mb = by_hand.update(by_hand.init(TEMPLATE), contributions(matrix))
    np.testing.assert_array_equal(flat(a), flat(b))
    assert ma["anomaly_scores"] == mb["anomaly_scores"]


@pytest.mark.parametrize(
    "layers",
    [
        [{"name": "median"}],
        [{"name": "trimmed_mean", "trim": 0.2}],
        [{"name": "krum", "num_byzantine": 1}],
        [{"name": "norm_bound", "max_norm": 1e9}, {"name": "mean", "weighted": False}],
    ],
)
def test_nan_and_wrong_shape_are_rejected_first_naming_the_site(layers: list) -> None:
    agg = build_aggregator(study(layers).aggregation)
    good = contributions(honest_and_outlier(0, 5, 1.0))
    nan = Contribution("nan-site", record([np.inf, 0, 0, 0, 0]))
    shape = Contribution("shape-site", ArrayRecord({"w": np.zeros(4), "b": np.zeros(1)}))
    _, _, m = agg.update(agg.init(TEMPLATE), [good[0], nan, *good[1:], shape])
    assert {"nan-site", "shape-site"} <= set(m["rejected_sites"])
    assert "nan-site" in m["rejected_reasons"]["nan-site"]
    assert "shape" in m["rejected_reasons"]["shape-site"]
    assert set(m["anomaly_scores"]) == {f"s{i}" for i in range(6)}  # scored after validation


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"name": "geometric_median"}], "aggregation.0: Input tag 'geometric_median'"),
        ([{"name": "median", "trim": 0.1}], "aggregation.0.median.trim: Extra inputs"),
        ([{"name": "trimmed_mean", "trim": 0.6}], "aggregation.0.trimmed_mean.trim"),
        ([{"name": "norm_bound"}], "aggregation.0.norm_bound.max_norm: Field required"),
        ([{"name": "norm_bound", "max_norm": -1}], "aggregation.0.norm_bound.max_norm"),
        ([{"name": "krum", "num_byzantine": -1}], "aggregation.0.krum.num_byzantine"),
        ([{"name": "median"}, {"name": "krum"}], "layer 0 \\('median'\\) .* must be the last"),
        ([{"name": "trimmed_mean", "trim": 0.1, "count": 1}], "not both"),
    ],
)
def test_study_file_errors_name_the_field(layers: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        study(layers)


def test_study_round_trips_and_defaults_to_no_layers() -> None:
    s = study([{"name": "norm_bound", "max_norm": 2}, {"name": "trimmed_mean", "trim": 0.25}])
    assert StudyConfig.from_dict(s.model_dump()) == s
    assert StudyConfig.from_dict(STUDY).aggregation == []


def test_study_strategy_uses_the_stack_and_baselines_do_not() -> None:
    s = study([{"name": "median"}])
    agg = study_strategy(s, 4).aggregator  # type: ignore[attr-defined]
    assert isinstance(agg, ValidateUpdates) and isinstance(agg.inner, CoordinateMedian)
    base = study_strategy(s, 1, baseline=True).aggregator  # type: ignore[attr-defined]
    assert isinstance(base.inner, WeightedMean)


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "scaffold"])
def test_checkpoints_round_trip_with_a_robust_stack(name: str) -> None:
    s = StudyConfig.from_dict(
        {**STUDY, "strategy": {"name": name}, "aggregation": [{"name": "trimmed_mean", "count": 1}]}
    )
    updates = {f"s{i}": ([float(i), 1.0], 10) for i in range(4)} | {"bad": ([50.0, -50.0], 10)}
    scaffold = name == "scaffold"
    strategy = study_strategy(s, 5)
    params = ArrayRecord({"w": np.zeros(2)})
    cfg = RoundConfig(study_id="c", num_rounds=4, seed=1, evaluate_every=0)
    grid = _grid(updates, scaffold)
    full, records = run_rounds(grid, strategy, strategy.init_state(params), cfg)
    assert records[0].fit["outlier_sites"] == ["bad"]
    half = RoundConfig(study_id="c", num_rounds=2, seed=1, evaluate_every=0)
    mid, _ = run_rounds(_grid(updates, scaffold), strategy, strategy.init_state(params), half)
    rec, header = state_to_record(strategy, mid)
    restored = state_from_record(study_strategy(s, 5), rec, header)
    resumed, _ = run_rounds(_grid(updates, scaffold), strategy, restored, cfg, start_round=3)
    np.testing.assert_array_equal(full.params["w"], resumed.params["w"])


def _grid(updates: dict, scaffold: bool):
    if not scaffold:
        return fixed_grid(updates)
    from fedcare.transport.inmemory import InMemoryGrid

    from ..strategy.helpers import fixed_site

    return InMemoryGrid(
        {
            s: fixed_site({"delta/w": u, "control/w": [0.1 * u[0], 0.0]}, n)
            for s, (u, n) in updates.items()
        }
    )
