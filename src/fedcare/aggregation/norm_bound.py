"""Norm bounding: scale each update down to an L2 norm of at most ``max_norm``.

The layer has a site half. Its entry in :meth:`NormBound.site_spec` (``{"norm_bound":
{"version": 1, "max_norm": ...}}``) travels with every task, and :func:`site_clip` applies it
to the update before it leaves the site. Clipping before sending is what makes the bound
usable under secure aggregation, where the server only ever sees the masked sum; without
secure aggregation the server half clips again, which changes nothing for honest sites and
bounds what a site that skipped its half can do. Under secure aggregation the server cannot
check the bound: it holds for sites that run fedcare's site code (honest-but-curious sites),
not against a site that tampers with its own software.

Memory: not bounded. The norm is a whole-array dot product and a clipped update is a scaled
whole-array copy (the server half holds one such copy per contribution while the inner
aggregator adds it); the blockwise path is :mod:`fedcare.aggregation.mean`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation._stack import anomaly_scores, merge_scores
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["SPEC_KEY", "SPEC_VERSION", "NormBound", "NormBoundState", "clip_to_norm", "site_clip"]

SPEC_KEY = "norm_bound"
SPEC_VERSION = 1


def clip_to_norm(arrays: ArrayRecord, max_norm: float) -> tuple[ArrayRecord, float]:
    """``(arrays scaled by min(1, max_norm / norm), norm)``; a new record, dtypes kept."""
    norm = arrays.norm()
    if norm <= max_norm:
        return arrays, norm
    factor = max_norm / norm
    return arrays.map(lambda v: (v * factor).astype(v.dtype)), norm


def site_clip(pipeline: Mapping[str, Any], arrays: ArrayRecord) -> ArrayRecord:
    """The site half: clip ``arrays`` as the task's pipeline spec says (unchanged if absent).

    Raises
    ------
    ValidationError
        For a ``norm_bound`` entry of another version or without a positive ``max_norm``.
    """
    spec = pipeline.get(SPEC_KEY)
    if spec is None:
        return arrays
    if not isinstance(spec, Mapping) or spec.get("version") != SPEC_VERSION:
        raise ValidationError(
            f"task pipeline {SPEC_KEY!r} entry {spec!r}: expected version {SPEC_VERSION}"
        )
    bound = spec.get("max_norm")
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
        raise ValidationError(f"task pipeline {SPEC_KEY!r} max_norm must be > 0, got {bound!r}")
    return clip_to_norm(arrays, float(bound))[0]


@dataclass(frozen=True)
class NormBoundState:
    inner: Any


class NormBound(Aggregator[NormBoundState]):
    """Scale every contribution whose L2 norm exceeds ``max_norm`` down to ``max_norm``.

    Streaming: contributions pass to ``inner`` one at a time. Measurements: the inner
    aggregator's, plus ``clipped_fraction``, ``clipped_sites``, ``norms`` (site -> norm before
    clipping), ``anomaly_scores`` (site -> its norm divided by the median norm over sites) and
    ``max_norm``.
    """

    name = "norm_bound"

    def __init__(self, inner: Aggregator[Any], *, max_norm: float) -> None:
        if isinstance(max_norm, bool) or not max_norm > 0 or max_norm == float("inf"):
            raise ConfigError(f"max_norm must be a finite number > 0, got {max_norm!r}")
        self.inner = inner
        self.max_norm = float(max_norm)

    def init(self, template: ArrayRecord) -> NormBoundState:
        return NormBoundState(inner=self.inner.init(template))

    def update(
        self, state: NormBoundState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, NormBoundState, Measurements]:
        norms: dict[str, float] = {}

        def clipped() -> Iterator[Contribution]:
            for c in contributions:
                arrays, norm = clip_to_norm(c.arrays, self.max_norm)
                norms[c.site_id] = norm
                yield Contribution(c.site_id, arrays, c.weight)

        result, inner_state, inner = self.inner.update(state.inner, clipped())
        sites = list(norms)
        over = sorted(s for s, x in norms.items() if x > self.max_norm)
        scores = anomaly_scores(sites, np.fromiter(norms.values(), dtype=np.float64))
        measurements: Measurements = {
            **inner,
            **merge_scores(self.name, scores, inner),
            "norms": dict(norms),
            "clipped_sites": over,
            "clipped_fraction": len(over) / len(sites) if sites else 0.0,
            "max_norm": self.max_norm,
        }
        return result, NormBoundState(inner_state), measurements

    def site_spec(self) -> Mapping[str, Any]:
        inner = dict(self.inner.site_spec())
        bound = self.max_norm
        if SPEC_KEY in inner:
            bound = min(bound, float(inner[SPEC_KEY]["max_norm"]))
        return {**inner, SPEC_KEY: {"version": SPEC_VERSION, "max_norm": bound}}
