"""Coordinate-wise median of contributions (Yin et al., ICML 2018).

Memory: not bounded. Every contribution of the round is stacked into one float64 matrix
(sites x parameters, :mod:`fedcare.aggregation._stack`), and the median sorts it: about
2 x sites model copies in float64, unlike :class:`~fedcare.aggregation.mean.WeightedMean`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation._stack import robust_measurements, stack, unflatten
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import ConfigError
from fedcare.records.arrays import ArrayRecord

__all__ = ["CoordinateMedian", "MedianState"]


@dataclass(frozen=True)
class MedianState:
    template: ArrayRecord


class CoordinateMedian(Aggregator[MedianState]):
    """Each parameter is the median of the sites' values for it (weights are ignored).

    Not streaming: all contributions of a round are held at once as a (sites x params) float64
    matrix. A minority of arbitrary contributions moves each coordinate at most to the range of
    the honest values, so one site scaling its update by 100 barely moves the result.

    Measurements: ``num_contributions``, ``total_weight``, ``contributing_sites``,
    ``anomaly_scores`` (site -> L2 distance of its update from the median divided by the
    median of those distances over sites; about 1 for a typical site), ``outlier_sites``
    (score above ``outlier_threshold``).
    """

    name = "median"

    def __init__(self, *, outlier_threshold: float = 3.0) -> None:
        if not outlier_threshold > 0:
            raise ConfigError(f"outlier_threshold must be > 0, got {outlier_threshold!r}")
        self.outlier_threshold = outlier_threshold

    def init(self, template: ArrayRecord) -> MedianState:
        return MedianState(template=template)

    def update(
        self, state: MedianState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, MedianState, Measurements]:
        data = stack(state.template, contributions, what="coordinate-wise median")
        centre = np.median(data.matrix, axis=0)
        distances = np.linalg.norm(data.matrix - centre, axis=1)
        measurements = robust_measurements(self.name, data, distances, self.outlier_threshold, {})
        return unflatten(state.template, centre), state, measurements
