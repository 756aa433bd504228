import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from fedcare.aggregation import TrimmedMean
from fedcare.aggregation.trimmed_mean import trim_count
from fedcare.errors import AggregationError, ConfigError

from .helpers import TEMPLATE, contributions, flat, honest_and_outlier


def run(matrix: np.ndarray, **options):
    agg = TrimmedMean(**options)
    return agg.update(agg.init(TEMPLATE), contributions(matrix))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 12), st.just(5)), elements=st.floats(-1e3, 1e3)),
    st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.4]),
)
def test_equals_scipy_trim_mean(matrix: np.ndarray, trim: float) -> None:
    n = len(matrix)
    if 2 * trim_count(n, trim=trim, count=None) >= n:
        return
    result, _, m = run(matrix, trim=trim)
    np.testing.assert_allclose(flat(result), stats.trim_mean(matrix, trim, axis=0), atol=1e-9)
    assert m["trim_per_side"] == int(np.floor(trim * n + 1e-9))


def test_count_equals_sorting_by_hand() -> None:
    matrix = np.random.default_rng(3).normal(size=(7, 5))
    result, _, m = run(matrix, count=2)
    expected = np.sort(matrix, axis=0)[2:5].mean(axis=0)
    np.testing.assert_allclose(flat(result), expected)
    assert m["trim_per_side"] == 2


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(3, 8), st.just(5)), elements=st.floats(-10, 10)),
    arrays(np.float64, st.tuples(st.integers(1, 2), st.just(5)), elements=st.floats(-1e6, 1e6)),
)
def test_outliers_up_to_the_trim_count_cannot_leave_the_honest_range(
    honest: np.ndarray, bad: np.ndarray
) -> None:
    result, _, _ = run(np.vstack([honest, bad]), count=len(bad))
    assert np.all(flat(result) >= honest.min(axis=0) - 1e-9)
    assert np.all(flat(result) <= honest.max(axis=0) + 1e-9)


def test_attacker_is_trimmed_everywhere_and_scored_highest() -> None:
    matrix = honest_and_outlier(0, 6, 100.0)
    _, _, m = run(matrix, count=1)
    assert m["trimmed_fraction"]["s6"] == 1.0
    honest_trimmed = [m["trimmed_fraction"][f"s{i}"] for i in range(6)]
    assert sum(honest_trimmed) == pytest.approx(1.0)  # one low value dropped per coordinate
    assert max(m["anomaly_scores"], key=m["anomaly_scores"].get) == "s6"
    assert m["outlier_sites"] == ["s6"]


def test_trimming_everything_is_an_error_naming_the_sites() -> None:
    with pytest.raises(AggregationError, match=r"drops 2 per side.*4 sites.*s0"):
        run(np.ones((4, 5)), count=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trim": 0.5}, "trim must be in"),
        ({"trim": -0.1}, "trim must be in"),
        ({"count": -1}, "count must be >= 0"),
        ({"trim": 0.1, "count": 1}, "not both"),
    ],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrimmedMean(**options)
