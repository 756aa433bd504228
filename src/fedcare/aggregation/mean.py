"""Streaming (weighted) mean of contributions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.errors import AggregationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["MeanState", "WeightedMean"]


@dataclass(frozen=True)
class MeanState:
    template: ArrayRecord


class WeightedMean(Aggregator[MeanState]):
    """The mean of contributions, weighted by each contribution's weight (or unweighted).

    Sums are accumulated in float64 one contribution at a time, so memory is one model's worth
    whatever the number of sites. The result has the template's dtypes.
    """

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = weighted

    def init(self, template: ArrayRecord) -> MeanState:
        return MeanState(template=template)

    def update(
        self, state: MeanState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, MeanState, Measurements]:
        sums = {k: np.zeros(v.shape, dtype=np.float64) for k, v in state.template.items()}
        total = 0.0
        sites: list[str] = []
        for c in contributions:
            state.template.check_structure(c.arrays, what=f"update from site {c.site_id!r}")
            w = float(c.weight) if self.weighted else 1.0
            for k, acc in sums.items():
                acc += w * c.arrays[k]  # in place on our own accumulator only
            total += w
            sites.append(c.site_id)
        if not sites:
            raise AggregationError("no contributions to aggregate")
        if total <= 0:
            raise AggregationError(f"total weight of contributions from {sites} is {total}")
        result = ArrayRecord(
            {k: (acc / total).astype(state.template[k].dtype) for k, acc in sums.items()},
            copy=False,
        )
        measurements: Measurements = {
            "num_contributions": len(sites),
            "total_weight": total,
            "contributing_sites": sites,
        }
        return result, state, measurements
