import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcare.aggregation import Contribution, MultiKrum, ValidateUpdates, WeightedMean
from fedcare.aggregation.krum import krum_scores
from fedcare.errors import AggregationError, ConfigError

from .helpers import TEMPLATE, contributions, flat, honest_and_outlier, record


def scores_by_loop(matrix: np.ndarray, f: int) -> np.ndarray:
    n = len(matrix)
    k = max(1, n - f - 2)
    out = []
    for i in range(n):
        d = sorted(float(np.sum((matrix[i] - matrix[j]) ** 2)) for j in range(n) if j != i)
        out.append(sum(d[:k]))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 9), st.just(5)), elements=st.floats(-100, 100)),
    st.integers(0, 3),
)
def test_scores_equal_a_direct_loop(matrix: np.ndarray, f: int) -> None:
    np.testing.assert_allclose(krum_scores(matrix, f), scores_by_loop(matrix, f), atol=1e-6)


def test_selects_the_honest_cluster_and_averages_it_with_weights() -> None:
    rng = np.random.default_rng(0)
    honest = 1.0 + 0.1 * rng.normal(size=(7, 5))
    attackers = np.array([[40.0] * 5, [-30.0] * 5])
    matrix = np.vstack([honest, attackers])
    weights = np.arange(1.0, 10.0)
    agg = MultiKrum(num_byzantine=2)
    result, _, m = agg.update(agg.init(TEMPLATE), contributions(matrix, weights))
    expected = np.average(honest, axis=0, weights=weights[:7])
    np.testing.assert_allclose(flat(result), expected)
    assert m["selected_sites"] == [f"s{i}" for i in range(7)]
    assert m["rejected_sites"] == ["s7", "s8"]
    assert "not selected by multi-Krum" in m["rejected_reasons"]["s7"]
    ranked = sorted(m["anomaly_scores"], key=m["anomaly_scores"].get)
    assert set(ranked[-2:]) == {"s7", "s8"}
    assert set(m["outlier_sites"]) == {"s7", "s8"}
    root = np.sqrt(scores_by_loop(matrix, 2))
    assert m["anomaly_scores"]["s7"] == pytest.approx(root[7] / np.median(root))


def test_plain_krum_keeps_one_update() -> None:
    matrix = honest_and_outlier(2, 4, 50.0)
    agg = MultiKrum(num_byzantine=1, num_selected=1)
    result, _, m = agg.update(agg.init(TEMPLATE), contributions(matrix))
    best = int(np.argmin(scores_by_loop(matrix, 1)))
    np.testing.assert_allclose(flat(result), matrix[best])
    assert len(m["rejected_sites"]) == 4


def test_validation_and_krum_rejections_are_merged_naming_sites() -> None:
    matrix = honest_and_outlier(1, 4, 80.0)
    nan = Contribution("broken", record([np.nan, 0, 0, 0, 0]))
    agg = ValidateUpdates(MultiKrum(WeightedMean(), num_byzantine=1))
    _, _, m = agg.update(agg.init(TEMPLATE), [*contributions(matrix), nan])
    assert m["rejected_sites"] == ["broken", "s4"]
    assert "NaN" in m["rejected_reasons"]["broken"]
    assert "multi-Krum" in m["rejected_reasons"]["s4"]


def test_too_few_sites_and_bad_options() -> None:
    agg = MultiKrum(num_byzantine=2)
    with pytest.raises(AggregationError, match="assumes 2 Byzantine sites but only 2"):
        agg.update(agg.init(TEMPLATE), contributions(np.ones((2, 5))))
    with pytest.raises(ConfigError, match="num_byzantine"):
        MultiKrum(num_byzantine=-1)
    with pytest.raises(ConfigError, match="num_selected"):
        MultiKrum(num_selected=0)
