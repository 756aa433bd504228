"""Quantiles by k-ary search on counts, over several rounds.

Each round the coordinator sends, per probability, ``points`` thresholds spread inside the
current bracket; a site answers ``count_le = #(x <= t)`` for each and its ``count`` of
non-missing values. A ``count_le`` below ``min_cell``, or one whose complement
``count - count_le`` is, is withheld; the site then sends only which tail it is in (``tail``:
-1 low, +1 high; 2 for a cell withheld only by complementary suppression, anywhere in
``[0, count]``), so the coordinator knows the pooled count lies in an interval and narrows
the bracket only where the interval decides. The target is the pooled ``inverted_cdf``
quantile: the smallest ``x`` with ``#(x_i <= x) >= ceil(p N)``. Without withheld cells the
answer (the bracket's upper end) is at most ``(upper - lower) / (points + 1) ** rounds``
above it and never below; the result states the final bracket width per probability.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser
from fedcare.analytics.frame import column
from fedcare.analytics.spec import QuantilesQuery
from fedcare.errors import ConfigError

__all__ = ["QuantileSearch", "site_quantiles"]


def site_quantiles(
    frame: pd.DataFrame, query: QuantilesQuery, rel: Releaser, thresholds: Any
) -> dict[str, np.ndarray]:
    """``count``, ``count_le`` (probabilities x points) with masks, and ``tail``."""
    what = f"quantiles query {query.name!r}"
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != len(query.probabilities) or not np.all(np.isfinite(t)):
        raise ConfigError(
            f"{what}: thresholds must be finite, shape ({len(query.probabilities)}, points); "
            f"got shape {t.shape}"
        )
    x = column(frame, query.variable, what=what)
    x = np.sort(x[~np.isnan(x)])
    n = float(len(x))
    le = np.searchsorted(x, t, side="right").astype(np.float64)
    out = rel.counts("count", np.array([n]))
    site_hidden = bool(out["count:suppressed"][0])
    low = rel.small(le)
    high = rel.small(n - le) & ~low
    out.update(rel.counts("count_le", le, also=high | site_hidden, cells_per_row=t.size))
    withheld = out["count_le:suppressed"].astype(bool)  # also complementary: anywhere in [0, n]
    tail = np.where(low, -1, np.where(high, 1, np.where(withheld, 2, 0)))
    out["tail"] = np.where(site_hidden, 0, tail).astype(np.int8)
    out["min_cell"] = np.array([float(rel.min_cell)])
    return out


@dataclass(frozen=True)
class QuantileSearch:
    """The coordinator's side: brackets per probability; :meth:`update` returns the next."""

    query: QuantilesQuery
    lo: np.ndarray
    hi: np.ndarray
    rounds_done: int = 0
    ambiguous: np.ndarray | None = None
    total: float = 0.0

    @classmethod
    def start(cls, query: QuantilesQuery) -> QuantileSearch:
        p = len(query.probabilities)
        return cls(query, np.full(p, query.lower), np.full(p, query.upper))

    @property
    def done(self) -> bool:
        return self.rounds_done >= self.query.rounds

    def thresholds(self) -> np.ndarray:
        """``(probabilities, points)`` thresholds strictly inside the brackets."""
        steps = np.arange(1, self.query.points + 1) / (self.query.points + 1)
        return self.lo[:, None] + (self.hi - self.lo)[:, None] * steps[None, :]

    def update(self, thresholds: np.ndarray, parts: Parts) -> QuantileSearch:
        """The search narrowed by the sites' answers to ``thresholds``."""
        lower, upper, total = _pooled_bounds(parts, thresholds.shape, self.query)
        target = np.ceil(np.asarray(self.query.probabilities) * total)
        new_lo, new_hi = self.lo.copy(), self.hi.copy()
        for i in range(len(target)):
            below = upper[i] < target[i]  # surely below the quantile
            above = lower[i] >= target[i]  # surely at or above it
            if below.any():
                new_lo[i] = thresholds[i][np.flatnonzero(below)[-1]]
            if above.any():
                new_hi[i] = thresholds[i][np.flatnonzero(above)[0]]
        undecided = (upper >= target[:, None]) & (lower < target[:, None])
        amb = np.asarray(undecided.any(axis=1), dtype=bool)
        if self.ambiguous is not None:
            amb = amb | self.ambiguous
        return replace(
            self, lo=new_lo, hi=new_hi, rounds_done=self.rounds_done + 1, ambiguous=amb, total=total
        )

    def result(self, parts: Parts) -> dict[str, Any]:
        hidden = {s: True for s, a in parts.items() if a["count:suppressed"][0]}
        return {
            "variable": self.query.variable,
            "probabilities": list(self.query.probabilities),
            "quantiles": self.hi.tolist(),
            "bracket_low": self.lo.tolist(),
            "error_bound": (self.hi - self.lo).tolist(),
            "method": "k-ary search on counts <= t; inverted_cdf definition",
            "count": self.total,
            "rounds": self.rounds_done,
            "exact_counts": not bool(self.ambiguous is not None and self.ambiguous.any()),
            "suppressed": {s: ["count"] for s in hidden} | _tails(parts),
        }


def _tails(parts: Parts) -> dict[str, list[str]]:
    return {s: ["count_le"] for s, a in parts.items() if np.any(a["count_le:suppressed"])}


def _pooled_bounds(
    parts: Mapping[str, Mapping[str, np.ndarray]], shape: tuple[int, ...], query: QuantilesQuery
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lower and upper bounds of the pooled ``#(x <= t)`` and the pooled count."""
    lower, upper = np.zeros(shape), np.zeros(shape)
    total = 0.0
    m = max(1, _min_cell_hint(parts))
    for a in parts.values():
        if a["count:suppressed"][0]:
            continue
        n = float(a["count"][0])
        total += n
        hide = a["count_le:suppressed"].astype(bool)
        tail = a["tail"]
        lower += np.where(hide, np.where(tail == 1, n - (m - 1), 0.0), a["count_le"])
        upper += np.where(hide, np.where(tail > 0, n, m - 1), a["count_le"])
    if not math.isfinite(total):
        raise ConfigError(f"quantiles query {query.name!r}: pooled count is not finite")
    return lower, upper, total


def _min_cell_hint(parts: Parts) -> int:
    """The largest ``min_cell`` any site used (sent as ``min_cell``), for the tail bounds."""
    return int(max((float(a.get("min_cell", np.zeros(1))[0]) for a in parts.values()), default=1))
