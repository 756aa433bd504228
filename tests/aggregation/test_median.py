import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcare.aggregation import Contribution, CoordinateMedian
from fedcare.errors import AggregationError, ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord

from .helpers import TEMPLATE, contributions, flat, honest_and_outlier

finite = st.floats(-1e6, 1e6, allow_nan=False)


def run(matrix: np.ndarray, weights=None):
    agg = CoordinateMedian()
    return agg.update(agg.init(TEMPLATE), contributions(matrix, weights))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 9), st.just(5)), elements=finite))
def test_equals_numpy_median_and_ignores_weights(matrix: np.ndarray) -> None:
    weights = np.arange(1, len(matrix) + 1)
    result, _, m = run(matrix, weights)
    np.testing.assert_allclose(flat(result), np.median(matrix, axis=0))
    assert result["w"].dtype == TEMPLATE["w"].dtype and result["w"].shape == (2, 2)
    assert m["num_contributions"] == len(matrix)
    assert m["total_weight"] == pytest.approx(weights.sum())


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(3, 8), st.just(5)), elements=st.floats(-10, 10)),
    arrays(np.float64, (5,), elements=finite),
)
def test_one_outlier_stays_within_the_honest_range(honest: np.ndarray, bad: np.ndarray) -> None:
    result, _, _ = run(np.vstack([honest, bad]))
    assert np.all(flat(result) >= honest.min(axis=0) - 1e-9)
    assert np.all(flat(result) <= honest.max(axis=0) + 1e-9)


def test_anomaly_scores_rank_the_attacker_highest() -> None:
    matrix = honest_and_outlier(0, 5, 100.0)
    _, _, m = run(matrix)
    centre = np.median(matrix, axis=0)
    d = np.linalg.norm(matrix - centre, axis=1)
    expected = d / np.median(d)
    got = np.array([m["anomaly_scores"][f"s{i}"] for i in range(6)])
    np.testing.assert_allclose(got, expected)
    assert max(m["anomaly_scores"], key=m["anomaly_scores"].get) == "s5"
    assert m["outlier_sites"] == ["s5"]
    assert m["anomaly_scores_by_layer"]["median"] == m["anomaly_scores"]


def test_identical_updates_score_zero() -> None:
    _, _, m = run(np.ones((3, 5)))
    assert m["anomaly_scores"] == {"s0": 0.0, "s1": 0.0, "s2": 0.0}


def test_errors_name_the_site_or_the_problem() -> None:
    agg = CoordinateMedian()
    with pytest.raises(AggregationError, match="no contributions"):
        agg.update(agg.init(TEMPLATE), [])
    bad = Contribution("evil", ArrayRecord({"w": np.zeros(3), "b": np.zeros(1)}))
    with pytest.raises(ValidationError, match=r"'evil'.*'w'.*shape"):
        agg.update(agg.init(TEMPLATE), [bad])
    with pytest.raises(ConfigError, match="outlier_threshold"):
        CoordinateMedian(outlier_threshold=0)


def test_inputs_are_not_mutated() -> None:
    matrix = honest_and_outlier(1, 3, 7.0)
    cs = contributions(matrix)
    before = [dict(c.arrays) for c in cs]
    agg = CoordinateMedian()
    agg.update(agg.init(TEMPLATE), cs)
    for c, old in zip(cs, before, strict=True):
        assert all(np.array_equal(c.arrays[k], old[k]) for k in old)
