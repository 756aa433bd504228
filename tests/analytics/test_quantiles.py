"""Quantiles by k-ary search: within the stated bound of the pooled quantile."""

from __future__ import annotations

import numpy as np

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.quantiles import QuantileSearch
from fedcare.analytics.spec import QuantilesQuery
from fedcare.data.base import FederatedDataset
from tests.analytics.helpers import pooled_frame, replies, run


def test_quantiles_within_stated_bound(heart: FederatedDataset) -> None:
    probs = [0.1, 0.25, 0.5, 0.75, 0.9]
    query = {"type": "quantiles", "variable": "thalach", "probabilities": probs}
    result, _ = run(heart, {"queries": [{**query, "lower": 0, "upper": 300}]})
    got = result.queries[0]
    x = pooled_frame(heart)["thalach"].dropna().to_numpy()
    expected = np.quantile(x, probs, method="inverted_cdf")
    bound = 300 / 16**12
    diff = np.asarray(got["quantiles"]) - expected
    assert np.all(diff >= 0) and np.all(diff <= bound), diff
    assert got["exact_counts"] is True
    assert result.rounds == 12


def test_withheld_tails_keep_the_quantile_inside_the_bracket(heart: FederatedDataset) -> None:
    probs = [0.01, 0.5, 0.99]
    query = {"type": "quantiles", "variable": "age", "probabilities": probs, "lower": 0}
    result, grid = run(heart, {"queries": [{**query, "upper": 120}]}, AnalyticsPolicy(min_cell=5))
    got = result.queries[0]
    expected = np.quantile(pooled_frame(heart)["age"].to_numpy(), probs, method="inverted_cdf")
    lo, hi = np.asarray(got["bracket_low"]), np.asarray(got["quantiles"])
    assert np.all(lo < expected) and np.all(expected <= hi)
    assert got["suppressed"]  # the 1% and 99% thresholds fall in small tails at some sites
    for reply in replies(grid):
        le = reply.arrays["q0/count_le"]
        assert not np.any((le > 0) & (le < 5))
        n = reply.arrays["q0/count"][0]
        shown = ~reply.arrays["q0/count_le:suppressed"].astype(bool)
        assert not np.any(shown & (n - le > 0) & (n - le < 5))  # complements too


def test_search_narrows_by_points_plus_one_per_round() -> None:
    q = QuantilesQuery(
        type="quantiles", variable="x", probabilities=[0.5], lower=0, upper=16, rounds=2, points=3
    )
    search = QuantileSearch.start(q)
    t = search.thresholds()
    assert t.tolist() == [[4.0, 8.0, 12.0]]
    # one site, 10 values all equal to 5: count(x <= t) = 0, 10, 10
    parts = {
        "a": {
            "count": np.array([10.0]),
            "count:suppressed": np.array([0]),
            "count_le": np.array([[0.0, 10.0, 10.0]]),
            "count_le:suppressed": np.zeros((1, 3), dtype=np.uint8),
            "tail": np.zeros((1, 3), dtype=np.int8),
            "min_cell": np.array([5.0]),
        }
    }
    search = search.update(t, parts)
    assert (search.lo[0], search.hi[0]) == (4.0, 8.0)
    assert search.thresholds().tolist() == [[5.0, 6.0, 7.0]]
    assert not search.done
