"""Multi-Krum (Blanchard et al., NeurIPS 2017; El Mhamdi et al., ICML 2018).

Memory: not bounded. Every contribution of the round is stacked into one float64 matrix
(sites x parameters, :mod:`fedcare.aggregation._stack`) to score pairwise distances; only the
inner aggregator (a :class:`~fedcare.aggregation.mean.WeightedMean`) of the selected rows is
blockwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.aggregation._stack import anomaly_scores, flatten, merge_scores
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.mean import WeightedMean
from fedcare.errors import AggregationError, ConfigError
from fedcare.records.arrays import ArrayRecord

__all__ = ["KrumState", "MultiKrum", "krum_scores"]


@dataclass(frozen=True)
class KrumState:
    template: ArrayRecord
    inner: Any


def krum_scores(matrix: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Each row's Krum score: the sum of squared distances to its ``n - f - 2`` nearest rows.

    With fewer than ``f + 3`` rows the neighbourhood shrinks to one row (``n >= 2``); one row
    scores 0.
    """
    n = matrix.shape[0]
    if n < 2:
        return np.zeros(n)
    sq = np.einsum("ij,ij->i", matrix, matrix)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (matrix @ matrix.T), 0.0)
    np.fill_diagonal(dist, np.inf)
    k = max(1, n - num_byzantine - 2)
    nearest = np.partition(dist, k - 1, axis=1)[:, :k]
    return np.asarray(nearest.sum(axis=1), dtype=np.float64)


class MultiKrum(Aggregator[KrumState]):
    """Keep the ``m`` contributions with the lowest Krum score and aggregate them with ``inner``.

    A site's Krum score is the sum of squared L2 distances from its update to its ``n - f - 2``
    nearest neighbours, ``f`` being the number of Byzantine sites assumed. ``m`` defaults to
    ``n - f``; ``m = 1`` is plain Krum. Guarantees hold for ``n > 2f + 2``; with fewer sites
    the neighbourhood shrinks (at least one neighbour), so Krum still prefers clustered updates.
    Not streaming: all contributions of a round are held at once (a sites x params matrix).

    Measurements: the inner aggregator's, plus ``rejected_sites`` / ``rejected_reasons``
    (sites not selected), ``krum_scores``, ``selected_sites``, ``anomaly_scores`` (site ->
    square root of its Krum score divided by the median over sites of that root; about 1 for a
    typical site) and ``outlier_sites`` (score above ``outlier_threshold``).

    Raises
    ------
    AggregationError
        When ``n - f < 1`` for the sites that arrived.
    """

    name = "krum"

    def __init__(
        self,
        inner: Aggregator[Any] | None = None,
        *,
        num_byzantine: int = 1,
        num_selected: int | None = None,
        outlier_threshold: float = 3.0,
    ) -> None:
        if num_byzantine < 0:
            raise ConfigError(f"num_byzantine must be >= 0, got {num_byzantine!r}")
        if num_selected is not None and num_selected < 1:
            raise ConfigError(f"num_selected must be >= 1, got {num_selected!r}")
        if not outlier_threshold > 0:
            raise ConfigError(f"outlier_threshold must be > 0, got {outlier_threshold!r}")
        self.inner: Aggregator[Any] = inner if inner is not None else WeightedMean()
        self.num_byzantine = num_byzantine
        self.num_selected = num_selected
        self.outlier_threshold = outlier_threshold

    def init(self, template: ArrayRecord) -> KrumState:
        return KrumState(template=template, inner=self.inner.init(template))

    def update(
        self, state: KrumState, contributions: Iterable[Contribution]
    ) -> tuple[ArrayRecord, KrumState, Measurements]:
        held: list[Contribution] = []
        for c in contributions:
            state.template.check_structure(c.arrays, what=f"update from site {c.site_id!r}")
            held.append(c)
        n = len(held)
        if n - self.num_byzantine < 1:
            raise AggregationError(
                f"multi-Krum assumes {self.num_byzantine} Byzantine sites but only {n} "
                f"contributed ({[c.site_id for c in held]})"
            )
        matrix = np.stack([flatten(state.template, c.arrays) for c in held])
        scores = krum_scores(matrix, self.num_byzantine)
        m = min(self.num_selected or n - self.num_byzantine, n - self.num_byzantine)
        chosen = set(np.argsort(scores, kind="stable")[:m].tolist())
        result, inner_state, inner_m = self.inner.update(
            state.inner, (c for i, c in enumerate(held) if i in chosen)
        )
        return (
            result,
            KrumState(state.template, inner_state),
            self._measure(held, scores, chosen, inner_m),
        )

    def _measure(
        self,
        held: list[Contribution],
        scores: np.ndarray,
        chosen: set[int],
        inner: Measurements,
    ) -> Measurements:
        sites = [c.site_id for c in held]
        anomaly = anomaly_scores(sites, np.sqrt(scores))
        rejected = {
            sites[i]: f"update from site {sites[i]!r} not selected by multi-Krum "
            f"(score {scores[i]:.4g}, anomaly {anomaly[sites[i]]:.3g})"
            for i in range(len(held))
            if i not in chosen
        }
        outliers = {s for s, x in anomaly.items() if x > self.outlier_threshold}
        return {
            **inner,
            **merge_scores(self.name, anomaly, inner),
            "krum_scores": {s: float(x) for s, x in zip(sites, scores, strict=True)},
            "selected_sites": sorted(sites[i] for i in chosen),
            "rejected_sites": sorted({*inner.get("rejected_sites", []), *rejected}),
            "rejected_reasons": {**inner.get("rejected_reasons", {}), **rejected},
            "outlier_sites": sorted({*inner.get("outlier_sites", []), *outliers}),
        }

    def site_spec(self) -> dict[str, Any]:
        return dict(self.inner.site_spec())
