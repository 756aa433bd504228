"""Adaptive clipping (Andrew et al. 2021): the clip norm follows a private quantile estimate.

Each round every site reports one bit, ``b_i = [||update_i|| <= C]`` (:func:`site_clip_bit`
is the site half). The server releases a noised count of unclipped updates and moves ``C``
geometrically toward the ``target_quantile`` of the update norms::

    b = (sum_i (b_i - 1/2) + N(0, count_noise_std^2)) / m + 1/2   # m: fixed expected_sites
    C <- C * exp(-learning_rate * (b - target_quantile))

The centred count has sensitivity 1/2, so it is a Gaussian mechanism with noise multiplier
``2 count_noise_std``. Andrew et al. keep the round at the budget ``z`` by raising the update
noise to ``z_delta = (z^-2 - (2 count_noise_std)^-2)^(-1/2)`` (:func:`update_noise_multiplier`;
a study file's ``adaptive`` section applies it). Two Gaussian mechanisms on the same data
compose exactly into one with ``z^-2 = z_delta^-2 + (2 count_noise_std)^-2``, so the round
reports that one event as ``dp_event`` (:func:`combine_gaussian`): ``z`` itself.

The layer wraps :class:`~fedcare.aggregation.gaussian_noise.GaussianNoise` (or any inner
aggregator with ``with_clip_norm(state, C)``): it hands the round's ``C`` to the inner layer,
which clips and noises with it. Here the bit is recovered from the norm the server half sees
(an update clipped at the site has norm ``C`` exactly, an unclipped one less), which needs the
updates in the clear (central DP). Under secure aggregation the bit must travel inside the
masked vector and the per-round ``C`` inside each task; this version does not wire that.

Measurements: the inner's plus ``clip_norm`` (used this round), ``next_clip_norm``,
``unclipped_fraction_noised``, ``dp_event`` and ``dp_events`` (the round's combined event).

Memory: not bounded: like :mod:`fedcare.aggregation.norm_bound`, a clipped update is a scaled
whole-array copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.gaussian_noise import round_rng
from fedcare.aggregation.norm_bound import clip_to_norm
from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent, event_from_dict
from fedcare.privacy.mechanisms import check_positive
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "AdaptiveClip",
    "AdaptiveClipState",
    "combine_gaussian",
    "site_clip_bit",
    "update_noise_multiplier",
]

#: Relative slack below ``C`` under which a received update counts as unclipped.
_UNCLIPPED_SLACK = 1e-9


def combine_gaussian(events: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's Gaussian events on the same data as one event: ``z^-2 = sum z_i^-2``.

    Exact for unsampled Gaussian mechanisms (their privacy-loss distributions compose into a
    Gaussian's); any noiseless event makes the round noiseless.

    Raises
    ------
    ConfigError
        For a sampled or repeated event (``sampling_probability < 1`` or ``count > 1``).
    """
    parsed = [event_from_dict(e) for e in events]
    if any(e.sampling_probability < 1 or e.count != 1 for e in parsed):
        raise ConfigError(f"only unsampled single Gaussian events combine, got {events}")
    if any(e.noise_multiplier == 0 for e in parsed):
        return DpEvent(0.0).to_dict()
    return DpEvent(sum(e.noise_multiplier**-2 for e in parsed) ** -0.5).to_dict()


def site_clip_bit(arrays: ArrayRecord, clip_norm: float) -> tuple[ArrayRecord, int]:
    """The site half: ``(arrays clipped to clip_norm, 1 if they were within it else 0)``."""
    clipped, norm = clip_to_norm(arrays, check_positive("clip_norm", clip_norm))
    return clipped, int(norm <= clip_norm)


def update_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """Andrew et al.'s update noise ``(z^-2 - (2 sigma_b)^-2)^(-1/2)`` for a total budget ``z``.

    Raises
    ------
    ConfigError
        If ``count_noise_std <= z / 2`` (the count query would take the whole budget).
    """
    z = check_positive("noise_multiplier", noise_multiplier)
    sb = check_positive("count_noise_std", count_noise_std)
    rest = z**-2 - (2 * sb) ** -2
    if rest <= 0:
        raise ConfigError(
            f"count_noise_std {sb!r} must exceed noise_multiplier / 2 ({z / 2!r}) to leave "
            "budget for the update"
        )
    return float(rest**-0.5)


@dataclass(frozen=True)
class AdaptiveClipState:
    inner: Any
    clip_norm: float
    round: int = 0


class AdaptiveClip(Aggregator[AdaptiveClipState]):
    """Move the inner layer's clip norm toward a quantile of update norms, privately.

    Parameters
    ----------
    inner:
        The layer that clips and noises (has ``with_clip_norm``).
    initial_clip_norm:
        ``C`` of the first round.
    target_quantile:
        The fraction of updates that should end up unclipped (0.5: the median norm).
    learning_rate:
        The geometric step ``eta`` (Andrew et al. use 0.2).
    count_noise_std:
        ``sigma_b``, std of the noise on the count of unclipped updates (0: not private).
    expected_sites:
        The fixed denominator of the count.
    seed:
        Seed of the count noise (``None``: OS entropy every round).
    """

    name = "adaptive_clip"

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        initial_clip_norm: float,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
        count_noise_std: float,
        expected_sites: int,
        seed: int | None,
    ) -> None:
        if not hasattr(inner, "with_clip_norm"):
            raise ConfigError(
                f"adaptive_clip must wrap a layer with a clip norm (gaussian_noise), "
                f"got {type(inner).__name__}"
            )
        if not 0 < target_quantile < 1:
            raise ConfigError(f"target_quantile must be in (0, 1), got {target_quantile!r}")
        if isinstance(expected_sites, bool) or not isinstance(expected_sites, int):
            raise ConfigError(f"expected_sites must be an integer >= 1, got {expected_sites!r}")
        if expected_sites < 1:
            raise ConfigError(f"expected_sites must be an integer >= 1, got {expected_sites!r}")
        self.inner = inner
        self.initial_clip_norm = check_positive("initial_clip_norm", initial_clip_norm)
        self.target_quantile = float(target_quantile)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.count_noise_std = check_positive("count_noise_std", count_noise_std, allow_zero=True)
        self.expected_sites = expected_sites
        self.seed = seed

    def init(self, template: ArrayRecord) -> AdaptiveClipState:
        return AdaptiveClipState(self.inner.init(template), self.initial_clip_norm)

    def update(
        self, state: AdaptiveClipState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, AdaptiveClipState, Measurements]:
        bound = state.clip_norm
        bits: list[int] = []

        def noting_bits() -> Iterator[Contribution]:
            for c in contributions:
                norm = c.arrays.norm()
                bits.append(int(norm < bound * (1 - _UNCLIPPED_SLACK) or norm == 0))
                yield Contribution(c.site_id, clip_to_norm(c.arrays, bound)[0], c.weight)

        inner_state = self.inner.with_clip_norm(state.inner, bound)
        result, inner_state, inner = self.inner.update(inner_state, noting_bits())
        rng = round_rng(None if self.seed is None else self.seed + 1, state.round)
        noise = float(rng.normal(0.0, self.count_noise_std)) if self.count_noise_std else 0.0
        # Andrew et al.: centred bits b - 1/2 have sensitivity 1/2 under add/remove-one-site
        fraction = (sum(b - 0.5 for b in bits) + noise) / self.expected_sites + 0.5
        next_bound = bound * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        events = [*inner.get("dp_events", []), DpEvent(2 * self.count_noise_std).to_dict()]
        event = combine_gaussian(events)
        measurements: Measurements = {
            **inner,
            "clip_norm": bound,
            "next_clip_norm": next_bound,
            "unclipped_fraction_noised": fraction,
            "target_quantile": self.target_quantile,
            "dp_event": event,
            "dp_events": [event],
        }
        return result, AdaptiveClipState(inner_state, next_bound, state.round + 1), measurements
