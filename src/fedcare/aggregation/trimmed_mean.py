"""Coordinate-wise trimmed mean of contributions (Yin et al., ICML 2018).

Memory: not bounded. Every contribution of the round is stacked into one float64 matrix
(sites x parameters, :mod:`fedcare.aggregation._stack`) and sorted per coordinate: about
2 x sites model copies in float64, unlike :class:`~fedcare.aggregation.mean.WeightedMean`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation._stack import robust_measurements, stack, unflatten
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import AggregationError, ConfigError
from fedcare.records.arrays import ArrayRecord

__all__ = ["TrimmedMean", "TrimmedMeanState", "trim_count"]


@dataclass(frozen=True)
class TrimmedMeanState:
    template: ArrayRecord


def trim_count(num_sites: int, *, trim: float | None, count: int | None) -> int:
    """Values dropped from each side of each coordinate: ``count``, or ``floor(trim * n)``."""
    if count is not None:
        return count
    return math.floor((trim or 0.0) * num_sites + 1e-9)


class TrimmedMean(Aggregator[TrimmedMeanState]):
    """For each parameter, drop the ``k`` largest and ``k`` smallest site values, average the rest.

    Give either ``trim``, a fraction in ``[0, 0.5)`` of sites dropped per side (``k =
    floor(trim * n)``: with 4 sites, ``trim=0.25`` drops one per side and ``trim=0.2`` drops
    none), or ``count``, ``k`` itself. Weights are ignored (a robust mean should not trust a
    site's own sample count). Not streaming: all contributions of a round are held at once as a
    (sites x params) float64 matrix.

    Measurements: as :class:`~fedcare.aggregation.median.CoordinateMedian` (``anomaly_scores``
    are distances from the trimmed mean over their median), plus ``trim_per_side`` and
    ``trimmed_fraction`` (site -> share of the coordinates where its value was dropped).

    Raises
    ------
    ConfigError
        For a ``trim`` outside ``[0, 0.5)``, a negative ``count`` or both given.
    AggregationError
        When ``2k >= n`` for the sites that arrived (nothing would be left to average).
    """

    name = "trimmed_mean"

    def __init__(
        self,
        *,
        trim: float | None = None,
        count: int | None = None,
        outlier_threshold: float = 3.0,
    ) -> None:
        if trim is not None and count is not None:
            raise ConfigError(f"give trim ({trim!r}) or count ({count!r}), not both")
        if trim is None and count is None:
            trim = 0.1
        if trim is not None and not 0 <= trim < 0.5:
            raise ConfigError(f"trim must be in [0, 0.5), got {trim!r}")
        if count is not None and count < 0:
            raise ConfigError(f"count must be >= 0, got {count!r}")
        if not outlier_threshold > 0:
            raise ConfigError(f"outlier_threshold must be > 0, got {outlier_threshold!r}")
        self.trim, self.count, self.outlier_threshold = trim, count, outlier_threshold

    def init(self, template: ArrayRecord) -> TrimmedMeanState:
        return TrimmedMeanState(template=template)

    def update(
        self, state: TrimmedMeanState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, TrimmedMeanState, Measurements]:
        data = stack(state.template, contributions, what="trimmed mean")
        n = len(data.site_ids)
        k = trim_count(n, trim=self.trim, count=self.count)
        if 2 * k >= n:
            raise AggregationError(
                f"trimmed mean drops {k} per side but only {n} sites contributed "
                f"({data.site_ids}); need more than {2 * k}"
            )
        order = np.argsort(data.matrix, axis=0, kind="stable")
        kept = np.take_along_axis(data.matrix, order[k : n - k], axis=0)
        centre = kept.mean(axis=0)
        trimmed = np.zeros(data.matrix.shape, dtype=bool)
        if k:
            cols = np.arange(data.matrix.shape[1])
            trimmed[order[:k], cols] = True
            trimmed[order[n - k :], cols] = True
        fraction = trimmed.mean(axis=1) if data.matrix.shape[1] else np.zeros(n)
        distances = np.linalg.norm(data.matrix - centre, axis=1)
        measurements = robust_measurements(self.name, data, distances, self.outlier_threshold, {})
        measurements["trim_per_side"] = k
        measurements["trimmed_fraction"] = {
            s: float(f) for s, f in zip(data.site_ids, fraction, strict=True)
        }
        return unflatten(state.template, centre), state, measurements
