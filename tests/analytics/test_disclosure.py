"""Small cells never leave a site; DP noise has the configured scale."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedcare.analytics.disclosure import SUPPRESSED, AnalyticsPolicy, Releaser, noise_scale
from fedcare.analytics.frame import site_frame
from fedcare.analytics.spec import NoiseSpec
from fedcare.data.base import FederatedDataset
from fedcare.errors import ConfigError
from tests.analytics.helpers import replies, run

SPEC: dict[str, Any] = {
    "queries": [
        {"type": "count"},
        {"type": "histogram", "variable": "age", "edges": [25, 35, 45, 55, 65, 75, 85]},
        {"type": "moments", "variables": ["age", "chol"]},
        {
            "type": "quantiles",
            "variable": "age",
            "probabilities": [0.05, 0.5],
            "lower": 0,
            "upper": 120,
            "rounds": 3,
        },
        {
            "type": "cohort",
            "filter": "age >= 70 and sex == 0",
            "queries": [{"type": "moments", "variables": ["chol"]}],
        },
    ]
}


def test_no_small_count_leaves_a_site_and_the_result_says_so(heart: FederatedDataset) -> None:
    result, grid = run(heart, SPEC, AnalyticsPolicy(min_cell=5))
    sent = replies(grid)
    assert len(sent) == 4 * 3  # first round + 2 more quantile steps
    for reply in sent:
        assert reply.num_samples == 0
        for name, values in reply.arrays.items():
            if name.rpartition("/")[2].startswith("count") and not name.endswith(SUPPRESSED):
                tiny = (values > 0) & (values < 5)
                assert not tiny.any(), (reply.site_id, name, values)
    # what the sites really have: bins with 1..4 patients must be marked withheld
    hist = result.queries[1]
    for site in heart.sites:
        age = site_frame(site, heart.feature_names)["age"].to_numpy()
        counts, _ = np.histogram(age, bins=SPEC["queries"][1]["edges"])
        small = [i for i, c in enumerate(counts) if 0 < c < 5]
        withheld = hist["suppressed"].get(site.site_id, [])
        # every small bin, and (complementary suppression) never a small bin alone
        assert set(small) <= set(withheld) and (not small or len(withheld) >= 2)
        assert [hist["per_site"][site.site_id][i] for i in small] == [None] * len(small)
    assert any(small_cells for small_cells in hist["suppressed"].values())
    cohort = result.queries[4]
    assert cohort["suppressed"]  # a cohort of old women is small at some hospital
    for reply in sent[:4]:  # a withheld cohort releases nothing about its members
        if reply.site_id in cohort["suppressed"]:
            assert reply.arrays["q4.0/count"][0] == 0
            assert reply.arrays["q4.0/sum"][0] == 0


def test_sums_of_a_withheld_group_are_withheld(heart: FederatedDataset) -> None:
    spec = {
        "queries": [
            {
                "type": "cohort",
                "filter": "age >= 75",
                "queries": [{"type": "moments", "variables": ["chol"]}],
            }
        ]
    }
    _, grid = run(heart, spec, AnalyticsPolicy(min_cell=5))
    for reply in replies(grid):
        if reply.arrays["q0.0/count:suppressed"][0]:
            assert reply.arrays["q0.0/sum"][0] == 0 and reply.arrays["q0.0/m2"][0] == 0


@pytest.mark.parametrize(("mechanism", "delta"), [("laplace", 0.0), ("gaussian", 1e-5)])
def test_noise_has_the_configured_scale(mechanism: str, delta: float) -> None:
    noise = NoiseSpec(mechanism=mechanism, epsilon=0.5, delta=delta)  # type: ignore[arg-type]
    rel = Releaser(5, noise=noise, rng=np.random.default_rng(7))
    true = np.full(200_000, 50.0)
    released = rel.counts("count", true)["count"]
    err = released - true
    scale = noise_scale(noise, 1.0)
    expected_sd = scale * math.sqrt(2.0) if mechanism == "laplace" else scale
    assert abs(err.mean()) < 0.02 * expected_sd
    assert abs(err.std() / expected_sd - 1.0) < 0.01
    if mechanism == "laplace":
        assert abs(np.abs(err).mean() / scale - 1.0) < 0.01  # E|X| = b for Laplace(b)
    assert rel.epsilon == 0.5 and rel.releases == 1


def test_gaussian_scale_formula() -> None:
    noise = NoiseSpec(mechanism="gaussian", epsilon=0.5, delta=1e-5)
    assert noise_scale(noise, 2.0) == pytest.approx(2.0 * math.sqrt(2 * math.log(1.25e5)) / 0.5)


def test_run_reports_epsilon_spent_per_site(heart: FederatedDataset) -> None:
    spec = {
        "noise": {"mechanism": "laplace", "epsilon": 0.25},
        "queries": [
            {"type": "count"},
            {"type": "histogram", "variable": "age", "edges": [20, 50, 80]},
            {"type": "moments", "variables": ["age"], "bounds": {"age": [0, 120]}},
        ],
    }
    result, _ = run(heart, spec, AnalyticsPolicy(min_cell=5, seeded_noise=True))
    # count, histogram bins + outside, moments count/sum/m2: 6 noised releases
    assert result.epsilon == {s: pytest.approx(6 * 0.25) for s in heart.site_ids}
    assert result.queries[0]["count"] != 740.0  # noised


def test_noise_on_sums_needs_bounds() -> None:
    rel = Releaser(5, noise=NoiseSpec(epsilon=1.0), rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="needs 'bounds'"):
        rel.sums(np.ones(2), np.zeros(2, dtype=bool), sensitivity=None, what="moments 'm'")


def test_zero_cells_follow_the_policy() -> None:
    counts = np.array([0.0, 1.0, 4.0, 5.0])
    assert Releaser(5).small(counts).tolist() == [False, True, True, False]
    assert Releaser(5, suppress_zeros=True).small(counts).tolist() == [True, True, True, False]


def test_policy_rejects_negative_min_cell() -> None:
    with pytest.raises(ConfigError, match="min_cell"):
        AnalyticsPolicy(min_cell=-1)


def test_epsilon_adds_up_over_quantile_rounds(heart: FederatedDataset) -> None:
    query = {
        "type": "quantiles",
        "variable": "age",
        "probabilities": [0.5],
        "lower": 0,
        "upper": 120,
        "rounds": 3,
    }
    spec = {"noise": {"mechanism": "laplace", "epsilon": 0.1}, "queries": [query]}
    result, grid = run(heart, spec, AnalyticsPolicy(min_cell=5, seeded_noise=True))
    # each of 3 rounds releases the count and the counts <= t: 2 releases per round
    assert result.epsilon == {s: pytest.approx(6 * 0.1) for s in heart.site_ids}
    assert len(replies(grid)) == 3 * len(heart.site_ids)
