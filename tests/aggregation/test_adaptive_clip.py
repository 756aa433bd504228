import math

import numpy as np
import pytest

from fedcare.aggregation import WeightedMean
from fedcare.aggregation.adaptive_clip import AdaptiveClip, site_clip_bit, update_noise_multiplier
from fedcare.aggregation.gaussian_noise import GaussianNoise
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord
from tests.aggregation.helpers import TEMPLATE, contributions


def stack(m: int, count_std: float, quantile: float, clip: float = 0.1) -> AdaptiveClip:
    inner = GaussianNoise(
        WeightedMean(), noise_multiplier=0.0, clip_norm=clip, expected_sites=m, seed=0
    )
    return AdaptiveClip(
        inner,
        initial_clip_norm=clip,
        target_quantile=quantile,
        learning_rate=0.2,
        count_noise_std=count_std,
        expected_sites=m,
        seed=1,
    )


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_clip_norm_converges_to_the_target_quantile(quantile: float) -> None:
    # Update norms are lognormal(0, 0.5) each round; after 300 rounds the clip norm must be
    # within 15% of the distribution's target quantile even with noise on the count.
    m, rng = 50, np.random.default_rng(0)
    agg = stack(m, count_std=2.0, quantile=quantile)
    state = agg.init(TEMPLATE)
    tail = []
    for rnd in range(300):
        norms = rng.lognormal(0.0, 0.5, m)
        directions = rng.normal(size=(m, 5))
        rows = directions / np.linalg.norm(directions, axis=1)[:, None] * norms[:, None]
        _, state, meas = agg.update(state, contributions(rows))
        if rnd >= 250:
            tail.append(meas["next_clip_norm"])
    from scipy.stats import norm as gauss

    target = math.exp(0.5 * gauss.ppf(quantile))
    assert np.mean(tail) == pytest.approx(target, rel=0.15)


def test_clip_norm_passes_to_the_noise_layer_and_events_add_the_count() -> None:
    inner = GaussianNoise(
        WeightedMean(), noise_multiplier=1.0, clip_norm=5.0, expected_sites=2, seed=0
    )
    agg = AdaptiveClip(inner, initial_clip_norm=0.5, count_noise_std=1e-3, expected_sites=2, seed=0)
    _, _, meas = agg.update(agg.init(TEMPLATE), contributions(np.ones((2, 5))))
    assert meas["clip_norm"] == 0.5
    assert meas["noise_std"] == pytest.approx(0.5)  # z * the adaptive C, not the initial 5.0
    combined = (1.0**-2 + (2e-3) ** -2) ** -0.5  # update (z=1) and centred count (2 sigma_b)
    assert meas["dp_event"]["noise_multiplier"] == pytest.approx(combined)
    assert meas["dp_events"] == [meas["dp_event"]]
    assert meas["next_clip_norm"] > 0.5  # both updates were clipped: C grows


def test_site_half_reports_the_bit() -> None:
    small = ArrayRecord({"w": np.array([0.3, 0.4])})
    assert site_clip_bit(small, 1.0) == (small, 1)
    clipped, bit = site_clip_bit(small, 0.25)
    assert bit == 0 and clipped.norm() == pytest.approx(0.25)


def test_study_stack_spends_exactly_the_configured_multiplier() -> None:
    from fedcare.privacy.accounting import DpEvent, rdp_epsilon
    from fedcare.privacy.study import build_dp_aggregator
    from fedcare.records.dp_spec import DpSpec

    dp = DpSpec(noise_multiplier=1.2, adaptive={"count_noise_std": 4.0})
    agg = build_dp_aggregator(dp, rounds=5, expected_sites=3, seed=0)
    _, _, meas = agg.update(agg.init(TEMPLATE), contributions(np.ones((3, 5))))
    assert meas["dp_event"]["noise_multiplier"] == pytest.approx(1.2)
    both = [DpEvent(meas["noise_multiplier"]), DpEvent(8.0)]  # update and centred count
    assert rdp_epsilon(both, 1e-5) == pytest.approx(rdp_epsilon([DpEvent(1.2)], 1e-5), rel=1e-6)


def test_update_noise_split_keeps_the_total() -> None:
    z, sb = 1.0, 5.0
    zd = update_noise_multiplier(z, sb)
    assert zd**-2 + (2 * sb) ** -2 == pytest.approx(z**-2)
    with pytest.raises(ConfigError, match="count_noise_std"):
        update_noise_multiplier(1.0, 0.4)


def test_needs_a_layer_with_a_clip_norm() -> None:
    with pytest.raises(ConfigError, match="gaussian_noise"):
        AdaptiveClip(
            WeightedMean(), initial_clip_norm=1.0, count_noise_std=1.0, expected_sites=2, seed=0
        )
