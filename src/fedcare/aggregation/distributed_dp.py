"""Distributed DP: each site adds a share of the Gaussian noise; only the sum is ever seen.

With ``n`` sites each adding ``N(0, sigma^2 / n)`` to its clipped update, the sum carries
``N(0, sigma^2)``, the noise of central DP, without a trusted coordinator: under secure
aggregation nobody sees a single site's (under-noised) update. ``sigma = z * C``.

* The site half: :meth:`DistributedGaussian.site_spec` adds ``{"distributed_dp": {"version":
  1, "clip_norm": C, "site_std": z C / sqrt(n)}}`` to every task; :func:`site_add_noise`
  clips and noises the update before it is masked, and the site sends weight 1 (every site
  counts equally: a sample-count weight would scale its sensitivity). The site draws the
  noise from its own generator (OS entropy in deployment).
* The server half (:class:`DistributedGaussian`): sums the (masked, then unmasked) updates,
  divides by the fixed ``n`` and does the bookkeeping: the noise actually in the sum is
  ``sigma * sqrt(k / n)`` when only ``k`` of the ``n`` sites replied, and the DP event
  records that effective multiplier ``z * sqrt(k / n)``, so a dropout costs budget honestly.
  (Honest-but-curious sites that know their own share see a sum with a little less noise;
  the usual remedy, counting ``n - 1`` honest sites, is left to the study's ``z``.)

Privacy mode ``private`` uses this site half (through ``fedcare.site.private``) with its own
server half, :class:`fedcare.aggregation.private_sum.PrivateSum`, which accounts every round
at the study's ``min_sites``; :class:`DistributedGaussian` is the alternative that accounts
the noise actually received.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.norm_bound import clip_to_norm
from fedcare.errors import AggregationError, ConfigError, ValidationError
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.mechanisms import (
    add_gaussian_noise,
    check_noise_multiplier,
    check_positive,
    noise_std,
)
from fedcare.records.arrays import ArrayRecord

__all__ = ["SPEC_KEY", "SPEC_VERSION", "DistributedGaussian", "site_add_noise"]

SPEC_KEY = "distributed_dp"
SPEC_VERSION = 1


def site_add_noise(
    pipeline: Mapping[str, Any], arrays: ArrayRecord, rng: np.random.Generator
) -> ArrayRecord:
    """The site half: clip to the spec's ``clip_norm`` and add ``N(0, site_std^2)``.

    Unchanged when the pipeline has no ``distributed_dp`` entry.

    Raises
    ------
    ValidationError
        For an entry of another version or with a bad ``clip_norm`` / ``site_std``.
    """
    spec = pipeline.get(SPEC_KEY)
    if spec is None:
        return arrays
    if not isinstance(spec, Mapping) or spec.get("version") != SPEC_VERSION:
        raise ValidationError(
            f"task pipeline {SPEC_KEY!r} entry {spec!r}: expected version {SPEC_VERSION}"
        )
    try:
        bound = check_positive("clip_norm", spec.get("clip_norm"))  # type: ignore[arg-type]
        std = check_positive("site_std", spec.get("site_std"), allow_zero=True)  # type: ignore[arg-type]
    except ConfigError as err:
        raise ValidationError(f"task pipeline {SPEC_KEY!r}: {err}") from None
    return add_gaussian_noise(clip_to_norm(arrays, bound)[0], std, rng)


@dataclass(frozen=True)
class DistributedState:
    inner: Any


class DistributedGaussian(Aggregator[DistributedState]):
    """Server half of distributed DP: sum, divide by the fixed ``num_sites``, account.

    Parameters
    ----------
    inner:
        A weighted mean; every site sends weight 1 (:func:`site_add_noise`'s caller sets its
        sample count to 1), so ``total_weight`` counts the sites in the sum.
    noise_multiplier, clip_norm:
        ``z`` and ``C``: the sum carries ``N(0, (z C)^2)`` when all ``num_sites`` add theirs.
    num_sites:
        ``n``, the sites expected per round (each adds ``(z C)^2 / n`` of variance).
    """

    name = "distributed_dp"

    def __init__(
        self,
        inner: Aggregator[Any],
        *,
        noise_multiplier: float,
        clip_norm: float,
        num_sites: int,
    ) -> None:
        if isinstance(num_sites, bool) or not isinstance(num_sites, int) or num_sites < 1:
            raise ConfigError(f"num_sites must be an integer >= 1, got {num_sites!r}")
        self.inner = inner
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.clip_norm = check_positive("clip_norm", clip_norm)
        self.num_sites = num_sites

    @property
    def site_std(self) -> float:
        """Each site's noise std, ``z C / sqrt(n)``."""
        return noise_std(self.noise_multiplier, self.clip_norm) / math.sqrt(self.num_sites)

    def init(self, template: ArrayRecord) -> DistributedState:
        return DistributedState(self.inner.init(template))

    def update(
        self, state: DistributedState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, DistributedState, Measurements]:
        mean, inner_state, inner = self.inner.update(state.inner, contributions)
        # Sites send weight 1 (the site half sets it), so the total weight counts the sites
        # whose noise is in the sum -- also when one secure-sum contribution carries them all.
        # (rounded: a secure sum's fixed-point encoding blurs the count by ~1e-7)
        total = float(round(float(inner.get("total_weight") or 0.0)))
        if total <= 0:
            raise AggregationError(f"{self.name}: no contributions to aggregate")
        factor = total / self.num_sites
        result = mean.map(lambda v: (np.asarray(v, dtype=np.float64) * factor).astype(v.dtype))
        share = min(1.0, total / self.num_sites)
        effective_z = self.noise_multiplier * math.sqrt(share)
        event = DpEvent(effective_z).to_dict()
        measurements: Measurements = {
            **inner,
            "clip_norm": self.clip_norm,
            "noise_multiplier": effective_z,
            "noise_std": noise_std(effective_z, self.clip_norm),
            "site_noise_std": self.site_std,
            "denominator": self.num_sites,
            "dp_event": event,
            "dp_events": [*inner.get("dp_events", []), event],
        }
        return result, DistributedState(inner_state), measurements

    def site_spec(self) -> Mapping[str, Any]:
        entry = {"version": SPEC_VERSION, "clip_norm": self.clip_norm, "site_std": self.site_std}
        return {**self.inner.site_spec(), SPEC_KEY: entry}
