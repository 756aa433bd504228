"""A study file's DP settings and the layers and site settings they build.

The settings (``privacy.dp`` in a study file) are plain data in :mod:`fedcare.records.dp_spec`,
which shows an example.

Central DP (``noise_multiplier`` / ``target_epsilon``) runs as aggregation layers (clip,
Gaussian noise, optionally adaptive clipping); the coordinator sees each clipped update, so it
is trusted (mode ``open``). Mode ``private`` reads the same ``noise_multiplier`` /
``target_epsilon``, ``clip_norm`` and ``delta`` but has the sites add the noise under secure
aggregation (:func:`fedcare.strategy.modes.private_mode`). ``local_dp_sgd`` works in any mode:
the site calibrates and accounts its own training.
"""

from __future__ import annotations

import math
from typing import Any

from fedcare.aggregation.adaptive_clip import AdaptiveClip, update_noise_multiplier
from fedcare.aggregation.base import Aggregator
from fedcare.aggregation.gaussian_noise import GaussianNoise
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.validate import ValidateUpdates
from fedcare.privacy.accounting.analysis import noise_multiplier_for_epsilon
from fedcare.privacy.dp_sgd import dp_config
from fedcare.records.dp_spec import AdaptiveClipSpec, DpSgdSettings, DpSpec

__all__ = [
    "AdaptiveClipSpec",
    "DpSgdSettings",
    "DpSpec",
    "build_dp_aggregator",
    "central_noise_multiplier",
    "dp_sgd_train_config",
    "expected_sites",
]


def central_noise_multiplier(dp: DpSpec, rounds: int) -> float:
    """The per-round noise multiplier: as given, or calibrated so ``rounds`` rounds spend
    ``target_epsilon`` (every round a Gaussian mechanism on the clipped sum, no sampling)."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    assert dp.target_epsilon is not None
    return noise_multiplier_for_epsilon(dp.target_epsilon, dp.delta, count=rounds)


def build_dp_aggregator(
    dp: DpSpec, *, rounds: int, expected_sites: int, seed: int | None
) -> Aggregator[Any]:
    """``ValidateUpdates`` around the central DP stack ``dp`` describes.

    Fixed clipping: ``GaussianNoise(WeightedMean)``. Adaptive: ``AdaptiveClip`` around it, the
    update noise raised as Andrew et al. do so the round's total stays at the multiplier.
    """
    z = central_noise_multiplier(dp, rounds)
    if dp.adaptive is None:
        assert dp.clip_norm is not None
        noise = GaussianNoise(
            WeightedMean(weighted=False),
            noise_multiplier=z,
            clip_norm=dp.clip_norm,
            expected_sites=expected_sites,
            seed=seed,
        )
        return ValidateUpdates(noise)
    a = dp.adaptive
    inner = GaussianNoise(
        WeightedMean(weighted=False),
        noise_multiplier=update_noise_multiplier(z, a.count_noise_std) if z > 0 else 0.0,
        clip_norm=a.initial_clip_norm,
        expected_sites=expected_sites,
        seed=seed,
    )
    layer = AdaptiveClip(
        inner,
        initial_clip_norm=a.initial_clip_norm,
        target_quantile=a.target_quantile,
        learning_rate=a.learning_rate,
        count_noise_std=a.count_noise_std,
        expected_sites=expected_sites,
        seed=seed,
    )
    return ValidateUpdates(layer)


def dp_sgd_train_config(dp: DpSpec, rounds: int) -> dict[str, float | int]:
    """Task config entries turning on DP-SGD at every site ({} when ``local_dp_sgd`` is off)."""
    local = dp.local_dp_sgd
    if local is None:
        return {}
    return dp_config(
        max_grad_norm=local.max_grad_norm,
        delta=dp.delta,
        rounds=rounds,
        noise_multiplier=local.noise_multiplier,
        target_epsilon=local.target_epsilon,
    )


def expected_sites(num_sites: int, fraction: float, min_sites: int) -> int:
    """Sites the strategy samples per round (as :func:`fedcare.strategy.base.sample_sites`)."""
    return min(num_sites, max(min_sites, math.ceil(fraction * num_sites)))
