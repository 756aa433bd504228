"""Mean and variance per variable from per-site count, sum and centred sum of squares.

A site sends, per variable, ``count`` (non-missing rows), ``sum`` and ``m2`` (the sum of
squared deviations from its own mean). The coordinator combines them exactly (Chan et al.'s
pairwise update): ``M2 = sum(m2_i + n_i (mean_i - mean)^2)``, variance ``M2 / (N - 1)``. A
variable whose count is withheld has its sum and m2 withheld too. With DP noise, ``bounds``
clip values and bound the sensitivities: 1 (count), ``max|b|`` (sum), ``(hi - lo)^2`` (m2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser, suppressed_cells
from fedcare.analytics.frame import column
from fedcare.analytics.spec import MomentsQuery

__all__ = ["combine_moments_query", "pooled_moments", "site_moments"]


def _values(
    frame: pd.DataFrame, var: str, bounds: dict[str, tuple[float, float]], what: str
) -> np.ndarray:
    x = column(frame, var, what=what)
    x = x[~np.isnan(x)]
    if var in bounds:
        lo, hi = bounds[var]
        x = np.clip(x, lo, hi)
    return x


def site_moments(frame: pd.DataFrame, query: MomentsQuery, rel: Releaser) -> dict[str, np.ndarray]:
    """``count``, ``sum``, ``m2`` per variable, with masks."""
    what = f"moments query {query.name!r}"
    n, s, m2 = [], [], []
    for var in query.variables:
        x = _values(frame, var, query.bounds, what)
        n.append(float(len(x)))
        s.append(float(x.sum()))
        m2.append(float(np.square(x - x.mean()).sum()) if len(x) else 0.0)
    v = len(query.variables)
    out = rel.counts("count", np.array(n), cells_per_row=v)
    hide = out["count:suppressed"].astype(bool)
    bounds = [query.bounds.get(v) for v in query.variables]
    s_sens = None if None in bounds else max(max(abs(a), abs(b)) for a, b in bounds)  # type: ignore[misc]
    m_sens = None if None in bounds else max((b - a) ** 2 for a, b in bounds)  # type: ignore[misc]
    out["sum"] = rel.sums(np.array(s), hide, sensitivity=s_sens, what=what, cells_per_row=v)
    out["m2"] = rel.sums(np.array(m2), hide, sensitivity=m_sens, what=what, cells_per_row=v)
    return out


def pooled_moments(
    counts: np.ndarray, sums: np.ndarray, m2s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, mean, M2)`` from per-site rows of counts, sums and m2 (shape ``(sites, vars)``)."""
    total = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, sums.sum(axis=0) / total, np.nan)
        site_mean = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), 0.0)
        dev = np.where(counts > 0, counts * np.square(site_mean - mean), 0.0)
    return total, mean, (m2s + dev).sum(axis=0)


def combine_moments_query(query: MomentsQuery, parts: Parts) -> dict[str, Any]:
    """Pooled count, mean and sample variance per variable over the released sites."""
    sites = list(parts)
    if not sites:
        counts = sums = m2s = np.zeros((0, len(query.variables)))
    else:
        counts = np.stack([parts[s]["count"] for s in sites])
        sums = np.stack([parts[s]["sum"] for s in sites])
        m2s = np.stack([parts[s]["m2"] for s in sites])
    total, mean, m2 = pooled_moments(counts, sums, m2s)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(total > 1, m2 / (total - 1), np.nan)
    return {
        "variables": list(query.variables),
        "count": total.tolist(),
        "mean": mean.tolist(),
        "variance": var.tolist(),
        "std": np.sqrt(var).tolist(),
        "suppressed": {
            site: [query.variables[i] for i in idx]
            for site, idx in suppressed_cells(parts, "count").items()
        },
    }
