"""Central DP: clip each site's update, add Gaussian noise to the sum, divide by a fixed count.

``GaussianNoise(inner, noise_multiplier=z, clip_norm=C, expected_sites=m, seed=...)`` is the
Gaussian mechanism on the sum of per-site updates (user-level DP, McMahan et al. 2018)::

    result = (sum_i clip(update_i, C) + N(0, (z C)^2 I)) / m

**Why a fixed denominator.** Under add/remove-one-site neighbouring the clipped sum has L2
sensitivity ``C``, so the noised sum is ``(epsilon, delta)``-DP by the accountant's analysis of
``z``. Dividing by the *realized* number of replies would release that count too (it changes
by one between neighbours) and the quotient would no longer be a post-processing of the noised
sum; dividing by the fixed ``m`` (the number of sites the strategy samples per round) is. The
result is an unbiased mean when ``m`` sites reply and a slightly shrunk one when fewer do.

Every contribution counts equally (weights are set to 1 before the ``inner`` aggregator, which
must be a mean reporting ``total_weight``): a sample-count weight would scale a site's
sensitivity. The layer clips itself, so the guarantee does not depend on an outer layer or on
sites honouring their half.

Randomness: the noise of round ``r`` comes from ``default_rng([seed, r])`` (reproducible in
simulation); ``seed=None`` draws fresh operating-system entropy every round, as deployment
must (nobody may know the noise). There is no default seed.

Measurements: the inner aggregator's plus ``clipped_fraction``, ``clipped_sites``,
``clip_norm``, ``noise_multiplier``, ``noise_std``, ``denominator``, ``dp_event`` (this round's
event, :class:`fedcare.privacy.accounting.DpEvent` as a dict) and ``dp_events`` (all events of
the round, what an accountant records).

Memory: not bounded: each clipped update is a whole-array copy, and the sum, its noise and the
noised sum are whole float64 arrays of the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.norm_bound import clip_to_norm
from fedcare.errors import AggregationError, ConfigError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.mechanisms import (
    add_gaussian_noise,
    check_noise_multiplier,
    check_positive,
    noise_std,
    system_rng,
)
from fedcare.records.arrays import ArrayRecord

__all__ = ["GaussianNoise", "GaussianNoiseState", "round_rng"]


def round_rng(seed: int | None, round_index: int) -> np.random.Generator:
    """One round's generator: from ``[seed, round]``, or the OS CSPRNG when ``seed`` is None."""
    if seed is None:
        return system_rng()
    return np.random.default_rng([seed, round_index])


@dataclass(frozen=True)
class GaussianNoiseState:
    inner: Any
    clip_norm: float
    round: int = 0


class GaussianNoise(Aggregator[GaussianNoiseState]):
    """Clip, sum, add ``N(0, (z C)^2)``, divide by ``expected_sites`` (see module docstring).

    Parameters
    ----------
    inner:
        A mean aggregator (``WeightedMean``); it sees every contribution with weight 1.
    noise_multiplier:
        ``z``, the noise std divided by the clip norm (>= 0).
    clip_norm:
        ``C``, the initial L2 bound of each update (an :class:`AdaptiveClip` layer outside
        this one may change it every round through :meth:`with_clip_norm`).
    expected_sites:
        The fixed denominator ``m``: sites sampled per round.
    seed:
        Seed of the noise (``None``: OS entropy every round). Required, never defaulted.
    sampling_probability:
        Probability a site takes part in a round, reported in the DP event (1.0 claims no
        amplification by sampling).
    """

    name = "gaussian_noise"

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        noise_multiplier: float,
        clip_norm: float,
        expected_sites: int,
        seed: int | None,
        sampling_probability: float = 1.0,
    ) -> None:
        self.inner = inner
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.clip_norm = check_positive("clip_norm", clip_norm)
        if isinstance(expected_sites, bool) or not isinstance(expected_sites, int):
            raise ConfigError(f"expected_sites must be an integer >= 1, got {expected_sites!r}")
        if expected_sites < 1:
            raise ConfigError(f"expected_sites must be an integer >= 1, got {expected_sites!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        DpEvent(self.noise_multiplier, sampling_probability)  # validates the probability
        self.expected_sites = expected_sites
        self.seed = seed
        self.sampling_probability = float(sampling_probability)

    def init(self, template: ArrayRecord) -> GaussianNoiseState:
        return GaussianNoiseState(inner=self.inner.init(template), clip_norm=self.clip_norm)

    def with_clip_norm(self, state: GaussianNoiseState, clip_norm: float) -> GaussianNoiseState:
        """``state`` with the clip norm (and so the noise std) of the next round replaced."""
        return replace(state, clip_norm=check_positive("clip_norm", clip_norm))

    def update(
        self, state: GaussianNoiseState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, GaussianNoiseState, Measurements]:
        bound = state.clip_norm
        clipped: list[str] = []
        sites: list[str] = []

        def unit_weight_clipped() -> Iterator[Contribution]:
            for c in contributions:
                arrays, norm = clip_to_norm(c.arrays, bound)
                sites.append(c.site_id)
                if norm > bound:
                    clipped.append(c.site_id)
                yield Contribution(c.site_id, arrays, 1.0)

        mean, inner_state, inner = self.inner.update(state.inner, unit_weight_clipped())
        if not sites:
            raise AggregationError(f"{self.name}: no contributions to aggregate")
        total = float(inner.get("total_weight", len(sites)))
        std = noise_std(self.noise_multiplier, bound)
        summed = mean.map(lambda v: np.asarray(v, dtype=np.float64) * total)
        noised = add_gaussian_noise(summed, std, round_rng(self.seed, state.round))
        result = ArrayRecord(
            {k: (v / self.expected_sites).astype(mean[k].dtype) for k, v in noised.items()},
            copy=False,
        )
        event = DpEvent(self.noise_multiplier, self.sampling_probability).to_dict()
        measurements: Measurements = {
            **inner,
            "clipped_sites": sorted(clipped),
            "clipped_fraction": len(clipped) / len(sites),
            "clip_norm": bound,
            "noise_multiplier": self.noise_multiplier,
            "noise_std": std,
            "denominator": self.expected_sites,
            "dp_event": event,
            "dp_events": [*inner.get("dp_events", []), event],
        }
        new_state = GaussianNoiseState(inner_state, bound, state.round + 1)
        return result, new_state, measurements
