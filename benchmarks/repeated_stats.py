"""Intervals over repeated splits: per-split means, t-intervals, paired differences, rows.

Each repetition (a train/test split) holds scores at several training seeds; its figure is the
mean over those seeds, and a row's ``mean`` / ``sd`` / ``lo`` / ``hi`` are the mean, the SD and a
95% Student-t interval (``n - 1`` degrees of freedom) over the split-level figures. Differences
between two methods are paired within each split before the interval is taken.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["difference_row", "interval", "row", "split_means", "t_quantile"]


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # slow to import: only when summarizing

    return float(t.ppf(0.975, df))


def interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, SD, and the 95% t-interval of the mean of ``values`` (finite ones only).

    With fewer than two finite values the SD is 0 and the interval ``nan``; with none, every
    figure is ``nan``.
    """
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return math.nan, math.nan, math.nan, math.nan
    mean = statistics.mean(kept)
    if len(kept) < 2:
        return mean, 0.0, math.nan, math.nan
    sd = statistics.stdev(kept)
    half = t_quantile(len(kept) - 1) * sd / math.sqrt(len(kept))
    return mean, sd, mean - half, mean + half


def split_means(runs: Sequence[Mapping[str, Any]], method: str, metric: str) -> list[float]:
    """Per split: the mean over training seeds of ``method``'s unweighted-over-sites score."""
    out = []
    for run in runs:
        values = [s[metric] for s in run["scores"][method] if math.isfinite(s[metric])]
        out.append(statistics.mean(values) if values else math.nan)
    return out


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def row(
    dataset: str, method: str, metric: str, values: Sequence[float], unit: str, notes: str
) -> dict[str, Any]:
    """A result row (DESIGN.md's format plus ``lo``/``hi``) of ``values``, one per split."""
    mean, sd, lo, hi = interval(values)
    return {
        "benchmark": "repeated",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": _rounded(mean),
        "sd": _rounded(sd),
        "n": sum(math.isfinite(v) for v in values),
        "unit": unit,
        "notes": notes,
        "lo": _rounded(lo),
        "hi": _rounded(hi),
    }


def difference_row(
    dataset: str, runs: Sequence[Mapping[str, Any]], a: str, b: str, metric: str
) -> dict[str, Any]:
    """The row of ``a - b`` paired by split, with how often the two are within 0.01."""
    diffs = [
        x - y
        for x, y in zip(split_means(runs, a, metric), split_means(runs, b, metric), strict=True)
    ]
    kept = [d for d in diffs if math.isfinite(d)]
    close = sum(abs(d) <= 0.01 for d in kept)
    not_below = sum(d >= -0.01 for d in kept)
    above = sum(d > 0 for d in kept)
    notes = (
        f"paired by split ({a} minus {b}, each split's mean over seeds); 95% t-interval; "
        f"|difference| <= 0.01 in {close} of {len(kept)} splits, >= -0.01 in {not_below}, "
        f"> 0 in {above}"
    )
    return row(dataset, f"{a} - {b}", metric, diffs, f"{metric} difference", notes)
