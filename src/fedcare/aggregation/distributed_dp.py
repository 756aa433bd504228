"""Distributed DP: each site adds a share of the Gaussian noise; only the sum is ever seen.

With ``n`` sites each adding ``N(0, sigma^2 / n)`` to its clipped update, the sum carries
``N(0, sigma^2)``, the noise of central DP, without a trusted coordinator: under secure
aggregation nobody sees a single site's (under-noised) update. ``sigma = z * C``.

The site half lives here: a pipeline entry ``{"distributed_dp": {"version": 1, "clip_norm": C,
"site_std": z C / sqrt(n)}}`` makes :func:`site_add_noise` clip and noise the update before it
is masked; the site sends weight 1 (every site counts equally: a sample-count weight would scale
its sensitivity) and draws the noise from its own generator (the OS CSPRNG in deployment).
The server half is :class:`fedcare.aggregation.private_sum.PrivateSum` (privacy mode
``private``, through :mod:`fedcare.site.private`), which writes that entry and accounts every
round at the study's ``min_sites``.

Memory: not bounded: the noise share and the clipped update are whole-array copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcare.aggregation.norm_bound import clip_to_norm
from fedcare.errors import ConfigError, ValidationError
from fedcare.privacy.mechanisms import (
    add_gaussian_noise,
    check_positive,
)
from fedcare.records.arrays import ArrayRecord

__all__ = ["SPEC_KEY", "SPEC_VERSION", "site_add_noise"]

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
