"""One site's bad reply is rejected for that site only: weights, dtypes, metrics, sums."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedcare.errors import RoundFailedError
from fedcare.records import ArrayRecord, Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.strategy import FedAvg, RoundConfig, run_round
from fedcare.strategy.driver import study_strategy
from fedcare.strategy.screening import check_summed_weight, weight_problem
from fedcare.transport.inmemory import InMemoryGrid

from .helpers import PARAMS, fixed_site

CFG = RoundConfig(study_id="s", num_rounds=1, seed=7, evaluate_every=1)
ROWS = {"a": 10, "b": 10, "c": 10}


def _grid(bad: object, *, rows: dict[str, int] | None = ROWS) -> InMemoryGrid:
    handlers = {"a": fixed_site({"w": [1.0, 1.0]}, 10), "b": fixed_site({"w": [3.0, 3.0]}, 10)}
    declared = None if rows is None else {"train": rows, "test": rows}
    return InMemoryGrid({**handlers, "c": bad}, declared_rows=declared)  # type: ignore[dict-item]


def _tampered(edit: object) -> object:
    honest = fixed_site({"w": [1.0, 1.0]}, 10)

    def handle(task: Task) -> Reply:
        return edit(task, honest(task))  # type: ignore[operator]

    return handle


def _run(grid: InMemoryGrid, strategy: FedAvg | None = None) -> tuple[np.ndarray, dict, dict]:
    strategy = strategy or FedAvg(min_sites=2)
    state, record = run_round(grid, strategy, strategy.init_state(PARAMS), CFG, 1)
    assert record.evaluate is not None
    return state.params["w"], record.fit, record.evaluate


def test_weight_above_the_declared_rows_is_rejected_for_that_site_only() -> None:
    huge = _tampered(lambda t, r: replace(r, num_samples=2**31 - 1) if t.kind == "fit" else r)
    params, fit, _ = _run(_grid(huge))
    np.testing.assert_allclose(params, [2.0, 2.0])  # the mean of a and b: c did not count
    assert "num_samples 2147483647, more than the 10 training rows" in fit["failed_sites"]["c"]
    assert fit["num_contributions"] == 2


def test_weight_problem_caps_by_the_declared_rows_only_where_declared() -> None:
    reply = Reply("s", 1, "x", "fit", arrays=PARAMS, num_samples=5)
    assert weight_problem(reply, {"x": 5}) is None
    assert "more than the 4" in str(weight_problem(reply, {"x": 4}))
    assert weight_problem(reply, {}) is None  # an undeclared site: no cap to apply


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_an_update_of_another_dtype_is_rejected_by_the_default_stack(dtype: type) -> None:
    def cast(task: Task, reply: Reply) -> Reply:
        if task.kind != "fit":
            return reply
        return replace(reply, arrays=ArrayRecord({"w": np.array([1000, 1000], dtype=dtype)}))

    params, fit, _ = _run(_grid(_tampered(cast)))
    np.testing.assert_allclose(params, [2.0, 2.0])
    assert fit["rejected_sites"] == ["c"]
    assert f"dtypes {{'w': '{np.dtype(dtype)}'}}" in fit["rejected_reasons"]["c"]


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        ({"accuracy": 0.9}, "without 'n'"),
        ({"accuracy": 0.9, "n": -1.0}, "'n' = -1.0"),
        ({"accuracy": 0.9, "n": 1e9}, "more than the 10 test rows"),
        ({"accuracy": 0.9, "n": float("nan")}, "'n' = nan"),
    ],
)
def test_bad_evaluation_metrics_are_rejected_for_that_site_only(
    metrics: dict[str, object], why: str
) -> None:
    bad = _tampered(lambda t, r: replace(r, metrics=metrics) if t.kind == "evaluate" else r)
    _, _, evaluation = _run(_grid(bad))
    assert sorted(evaluation["per_site"]) == ["a", "b"]
    assert why in evaluation["failed_sites"]["c"]
    assert evaluation["weighted"]["n"] == 20


def test_a_study_without_an_aggregation_entry_still_validates() -> None:
    study = StudyConfig.from_dict(
        {"name": "t", "dataset": {"name": "synthetic"}, "model": {"kind": "logistic"}},
        source="test",
    )
    assert not study.aggregation
    strategy = study_strategy(study, 3)
    nan = _tampered(
        lambda t, r: replace(r, arrays=ArrayRecord({"w": [np.nan, 1.0]})) if t.kind == "fit" else r
    )
    for bad, why in [(nan, "NaN"), (_tampered(lambda t, r: r), None)]:
        grid = _grid(bad)
        state = strategy.init_state(PARAMS)
        _, record = run_round(grid, strategy, state, replace(CFG, study_id="t"), 1)
        if why is None:
            assert record.fit["rejected_sites"] == []
        else:
            assert record.fit["rejected_sites"] == ["c"]
            assert why in record.fit["rejected_reasons"]["c"]


def test_a_secure_sum_heavier_than_the_declared_rows_fails_the_round_with_the_reason() -> None:
    measurements = {"contributing_sites": ["a", "b"], "total_weight": 25.0}
    check_summed_weight(1, measurements, {"a": 10, "b": 15})
    check_summed_weight(1, measurements, {"a": 10})  # not every site declared: not checkable
    with pytest.raises(RoundFailedError, match="exceeds the 20 training rows"):
        check_summed_weight(1, measurements, {"a": 10, "b": 10})


def test_under_masking_an_overstated_weight_fails_the_round_naming_the_declared_rows() -> None:
    """Mode ``secure``: only the sum is seen, so the check is on the summed weight. (Mode
    ``private`` sends weight 1 per site, set by the site's noise layer.)"""
    from fedcare.data.registry import load_dataset
    from fedcare.simulation.run import grid_for, train_on_grid
    from tests.conftest import require_mirror

    require_mirror()
    sites = list(load_dataset("heart-disease").sites)
    study = StudyConfig.from_dict(
        {
            "name": "masked",
            "dataset": {"name": "heart-disease"},
            "model": {"kind": "logistic"},
            "rounds": 1,
            "privacy": {"mode": "secure"},
        },
        source="test",
    )
    shape = sites[0].train.input_shape
    honest = train_on_grid(grid_for(sites), study, shape, label="federated")
    assert honest.history[0].fit["num_contributions"] == 4
    grid = grid_for(sites)
    runtime = grid._handlers["va"].runtime  # type: ignore[attr-defined]
    fit = runtime.fit
    runtime.fit = lambda task: replace(fit(task), num_samples=10**6)  # before the site masks
    with pytest.raises(RoundFailedError, match="exceeds the 486 training rows they declared"):
        train_on_grid(grid, study, shape, label="federated")


def _honest_summary() -> str:
    """A real site's summary of 10 rows."""
    import json

    from fedcare.evaluation.clinical import site_summary
    from fedcare.records.validation_spec import ValidationSpec

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 5)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, 10), 0.01, 0.99)
    spec = ValidationSpec(bootstrap=20).model_dump(mode="json")
    return json.dumps(site_summary("binary", y, p, spec=spec, rng=rng), allow_nan=False)


def _evaluation(site: str, text: str | None) -> Reply:
    info = {} if text is None else {"validation": text}
    return Reply("s", 3, site, "evaluate", num_samples=10, metrics={"n": 10.0}, info=info)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "is not JSON"),
        ('{"version": 1, "task": "binary", "n": NaN}', "is not JSON"),
        ("[1, 2]", "is not an object"),
        ('{"version": 1, "task": "binary", "n": 11}', "more than the 10 test rows"),
        ('{"version": 1, "task": "binary", "n": 5}', "missing field(s)"),
        ("FORGED-BINS", "calibration"),
        ('{"pad": "' + "x" * 1_000_001 + '"}', "over 1000000 bytes"),
    ],
)
def test_a_bad_validation_summary_rejects_that_sites_evaluation(text: str, reason: str) -> None:
    from fedcare.strategy.screening import with_valid_validation

    if text == "FORGED-BINS":  # an honest summary whose bins no longer add up to its rows
        import json

        forged = json.loads(_honest_summary())
        forged["calibration"]["bins"][0]["n"] += 3
        text = json.dumps(forged)
    failures: dict[str, str] = {}
    kept: dict[str, dict] = {}
    replies = [_evaluation("a", None), _evaluation("b", text), _evaluation("c", _honest_summary())]
    passed = list(with_valid_validation(replies, {"a": 10, "b": 10, "c": 10}, failures, kept))
    assert [r.site_id for r in passed] == ["a", "c"]
    assert failures["b"].startswith("rejected: site 'b' validation summary")
    assert reason in failures["b"]
    assert list(kept) == ["c"]  # a site without a summary is still counted for its metrics
