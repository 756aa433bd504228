"""The server half of privacy mode ``private``: distributed Gaussian noise under a secure sum.

Privacy mode ``private`` is a composition, not a new mechanism::

    SecureSum( ValidateUpdates( PrivateSum( WeightedMean ) ) )      coordinator
    clip to C (norm_bound) -> + N(0, sigma_site^2) -> mask             each site

Each site clips its update to ``clip_norm`` C (the ``norm_bound`` site half), adds
``N(0, sigma_site^2)`` (the ``distributed_dp`` site half,
:func:`fedcare.aggregation.distributed_dp.site_add_noise`) and masks the result with weight 1;
the coordinator only ever unmasks the noised sum over the sites that finished the protocol.

**Dropouts.** The per-site std is ``sigma_site = z C / sqrt(m)`` where ``m`` is the fewest
sites a round is accepted with (the study's ``min_sites``): a round counts only when at least
``m`` sites contributed, so the sum it releases carries noise of variance ``k sigma_site^2
>= (z C)^2``. Every accepted round is therefore accounted as one Gaussian mechanism with
multiplier ``z`` (the worst case the round accepted); when more sites reply the sum is noisier
than accounted, never less. Honest-but-curious sites are assumed: each trusts the others to add
their share (as in every distributed-DP scheme without a trusted party).

:class:`PrivateSum` receives the secure sum as ONE contribution (the mean over the ``k``
contributing sites, weight ``k``), passes it on unchanged and reports the round's DP event.

Memory: not bounded: the secure sum works on whole fixed-point vectors of the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.distributed_dp import SPEC_KEY as NOISE_KEY
from fedcare.aggregation.distributed_dp import SPEC_VERSION as NOISE_VERSION
from fedcare.aggregation.norm_bound import SPEC_KEY as CLIP_KEY
from fedcare.aggregation.norm_bound import SPEC_VERSION as CLIP_VERSION
from fedcare.errors import ConfigError, ValidationError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.mechanisms import check_noise_multiplier, check_positive, noise_std
from fedcare.records.arrays import ArrayRecord

__all__ = ["PrivateSum", "PrivateSumState", "site_round_event"]


@dataclass(frozen=True)
class PrivateSumState:
    inner: Any


class PrivateSum(Aggregator[PrivateSumState]):
    """Account the noised secure sum; sites clip and add ``N(0, (z C)^2 / min_sites)``.

    Parameters
    ----------
    inner:
        The mean aggregator the (single, securely summed) contribution goes to.
    noise_multiplier, clip_norm:
        ``z`` and ``C``; every accepted round is one Gaussian mechanism with multiplier ``z``.
    min_sites:
        ``m``: the fewest contributions a round is accepted with (per-site noise is scaled
        to it, see the module docstring).
    """

    name = "private_sum"

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        noise_multiplier: float,
        clip_norm: float,
        min_sites: int,
    ) -> None:
        if isinstance(min_sites, bool) or not isinstance(min_sites, int) or min_sites < 1:
            raise ConfigError(f"min_sites must be an integer >= 1, got {min_sites!r}")
        self.inner = inner
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.clip_norm = check_positive("clip_norm", clip_norm)
        self.min_sites = min_sites

    @property
    def site_std(self) -> float:
        """Each site's noise std, ``z C / sqrt(min_sites)``."""
        return noise_std(self.noise_multiplier, self.clip_norm) / math.sqrt(self.min_sites)

    @property
    def event(self) -> DpEvent:
        """The DP event of one accepted round."""
        return DpEvent(self.noise_multiplier)

    def init(self, template: ArrayRecord) -> PrivateSumState:
        return PrivateSumState(self.inner.init(template))

    def update(
        self, state: PrivateSumState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, PrivateSumState, Measurements]:
        seen: list[str] = []

        def noting() -> Iterator[Contribution]:
            for c in contributions:
                seen.append(c.site_id)
                yield c

        result, inner_state, inner = self.inner.update(state.inner, noting())
        event = self.event.to_dict()
        measurements: Measurements = {
            **inner,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "noise_std": noise_std(self.noise_multiplier, self.clip_norm),
            "site_noise_std": self.site_std,
            "dp_min_sites": self.min_sites,
            "dp_event": event,
            "dp_events": [*inner.get("dp_events", []), event],
        }
        return result, PrivateSumState(inner_state), measurements

    def site_spec(self) -> Mapping[str, Any]:
        noise = {
            "version": NOISE_VERSION,
            "clip_norm": self.clip_norm,
            "site_std": self.site_std,
            "min_sites": self.min_sites,
        }
        clip = {"version": CLIP_VERSION, "max_norm": self.clip_norm}
        return {**self.inner.site_spec(), CLIP_KEY: clip, NOISE_KEY: noise}


def site_round_event(pipeline: Mapping[str, Any]) -> DpEvent | None:
    """The DP event a site's noise share gives one round, from its task's pipeline.

    The site computes it from what it is asked to do: noise ``site_std`` on updates clipped to
    ``clip_norm``, with at least ``min_sites`` such shares in every accepted sum, so the sum's
    multiplier is ``site_std * sqrt(min_sites) / clip_norm``. None without a
    ``distributed_dp`` entry.

    Raises
    ------
    ValidationError
        For an entry of another version or without a valid ``clip_norm``, ``site_std`` or
        ``min_sites``.
    """
    spec = pipeline.get(NOISE_KEY)
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or spec.get("version") != NOISE_VERSION:
        raise ValidationError(
            f"task pipeline {NOISE_KEY!r} entry {spec!r}: expected version {NOISE_VERSION}"
        )
    m = spec.get("min_sites")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValidationError(f"task pipeline {NOISE_KEY!r} min_sites must be >= 1, got {m!r}")
    try:
        clip = check_positive("clip_norm", spec.get("clip_norm"))  # type: ignore[arg-type]
        std = check_positive("site_std", spec.get("site_std"), allow_zero=True)  # type: ignore[arg-type]
    except ConfigError as err:
        raise ValidationError(f"task pipeline {NOISE_KEY!r}: {err}") from None
    return DpEvent(std * math.sqrt(m) / clip)
