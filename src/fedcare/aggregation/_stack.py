"""Shared helpers of the robust layers: contributions as a (sites x params) matrix, scores.

Median, trimmed mean and Krum need every contribution of a round at once, so they collect the
stream into one float64 matrix (one row per site, the template's arrays flattened in order) and
work on it with vectorized numpy. Memory is ``sites x params x 8`` bytes.

Memory: not bounded (sites x parameters in float64); the blockwise path is
:mod:`fedcare.aggregation.mean` and :mod:`fedcare.aggregation.validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation.base import Contribution, Measurements
from fedcare.errors import AggregationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["Stack", "anomaly_scores", "merge_scores", "stack", "unflatten"]


@dataclass(frozen=True)
class Stack:
    """A round's contributions: site ids, a (sites x params) float64 matrix, weights."""

    site_ids: list[str]
    matrix: np.ndarray
    weights: np.ndarray


def stack(template: ArrayRecord, contributions: Iterable[Contribution], *, what: str) -> Stack:
    """Collect ``contributions`` (checked against ``template``) into a :class:`Stack`.

    Raises
    ------
    AggregationError
        If there is no contribution (``what`` names the aggregator).
    ValidationError
        If a contribution does not have the template's structure (names the site).
    """
    rows: list[np.ndarray] = []
    sites: list[str] = []
    weights: list[float] = []
    for c in contributions:
        template.check_structure(c.arrays, what=f"update from site {c.site_id!r}")
        rows.append(flatten(template, c.arrays))
        sites.append(c.site_id)
        weights.append(float(c.weight))
    if not rows:
        raise AggregationError(f"{what}: no contributions to aggregate")
    return Stack(sites, np.stack(rows), np.asarray(weights, dtype=np.float64))


def flatten(template: ArrayRecord, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The arrays of ``arrays`` in ``template`` order, as one float64 vector."""
    if not len(template):
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in template])


def unflatten(template: ArrayRecord, vector: np.ndarray) -> ArrayRecord:
    """The inverse of :func:`flatten`, with the template's shapes and dtypes."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for k, v in template.items():
        out[k] = vector[offset : offset + v.size].reshape(v.shape).astype(v.dtype)
        offset += v.size
    return ArrayRecord(out, copy=False)


def anomaly_scores(site_ids: list[str], distances: np.ndarray) -> dict[str, float]:
    """``distance_i / median_j(distance_j)``: about 1 for a typical site, large for an outlier.

    ``distances`` are each site's distances from a robust centre (the aggregate, or Krum's
    score). When the median distance is 0 (most sites agree exactly), the mean is used, and
    when every distance is 0 every score is 0.
    """
    d = np.asarray(distances, dtype=np.float64)
    scale = float(np.median(d)) if d.size else 0.0
    if scale <= 0:
        scale = float(d.mean()) if d.size else 0.0
    if scale <= 0:
        return {s: 0.0 for s in site_ids}
    return {s: float(x / scale) for s, x in zip(site_ids, d, strict=True)}


def merge_scores(
    layer: str, scores: Mapping[str, float], inner: Measurements
) -> dict[str, Measurements | dict[str, float]]:
    """``anomaly_scores`` (per-site max over layers) and ``anomaly_scores_by_layer``.

    A site is as anomalous as the most suspicious layer of the stack says.
    """
    by_layer = {**inner.get("anomaly_scores_by_layer", {}), layer: dict(scores)}
    merged: dict[str, float] = {}
    for per_site in by_layer.values():
        for site, score in per_site.items():
            merged[site] = max(score, merged.get(site, score))
    return {"anomaly_scores": dict(sorted(merged.items())), "anomaly_scores_by_layer": by_layer}


def robust_measurements(
    layer: str, data: Stack, distances: np.ndarray, threshold: float, inner: Measurements
) -> Measurements:
    """The measurements every robust layer reports, from each site's distance to the centre.

    ``outlier_sites`` lists the sites whose score from this layer exceeds ``threshold``.
    """
    scores = anomaly_scores(data.site_ids, distances)
    flagged = [s for s, x in scores.items() if x > threshold]
    outliers = sorted({*inner.get("outlier_sites", []), *flagged})
    return {
        "num_contributions": len(data.site_ids),
        "total_weight": float(data.weights.sum()),
        "contributing_sites": list(data.site_ids),
        **inner,
        **merge_scores(layer, scores, inner),
        "outlier_sites": outliers,
    }
