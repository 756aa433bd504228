"""Pearson correlation over sites, listwise: rows complete in every variable.

A site sends ``count`` (complete rows), ``sum`` per variable and ``cross``, the centred
cross-product matrix ``sum((x - mean_i)(x - mean_i)^T)``. The coordinator combines exactly:
``C = sum(C_i + n_i (m_i - m)(m_i - m)^T)``; covariance ``C / (N - 1)``, correlation
``C_ab / sqrt(C_aa C_bb)``. A withheld count withholds the sums and matrix with it. With DP
noise, ``bounds`` clip values; sensitivities: 1, ``max|b|``, ``max (hi - lo)^2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser, suppressed_cells
from fedcare.analytics.frame import column
from fedcare.analytics.spec import CorrelationQuery

__all__ = ["combine_correlation", "site_correlation"]


def _rows(frame: pd.DataFrame, query: CorrelationQuery) -> np.ndarray:
    what = f"correlation query {query.name!r}"
    X = np.column_stack([column(frame, v, what=what) for v in query.variables])
    X = X[~np.isnan(X).any(axis=1)]
    for j, var in enumerate(query.variables):
        if var in query.bounds:
            X[:, j] = np.clip(X[:, j], *query.bounds[var])
    return X


def site_correlation(
    frame: pd.DataFrame, query: CorrelationQuery, rel: Releaser
) -> dict[str, np.ndarray]:
    """``count`` (complete rows), ``sum`` per variable, ``cross`` (centred cross-products)."""
    X = _rows(frame, query)
    centred = X - X.mean(axis=0) if len(X) else X
    out = rel.counts("count", np.array([float(len(X))]))
    hide = bool(out["count:suppressed"][0])
    bounds = [query.bounds.get(v) for v in query.variables]
    known = all(b is not None for b in bounds)
    s_sens = max(max(abs(b[0]), abs(b[1])) for b in bounds if b) if known else None
    c_sens = max((b[1] - b[0]) ** 2 for b in bounds if b) if known else None
    what = f"correlation query {query.name!r}"
    v = len(query.variables)
    out["sum"] = rel.sums(
        X.sum(axis=0), np.array(hide), sensitivity=s_sens, what=what, cells_per_row=v
    )
    out["cross"] = rel.sums(
        centred.T @ centred, np.array(hide), sensitivity=c_sens, what=what, cells_per_row=v * v
    )
    return out


def combine_correlation(query: CorrelationQuery, parts: Parts) -> dict[str, Any]:
    """Pooled correlation and covariance matrices over the released sites."""
    v = len(query.variables)
    n_total = sum(float(a["count"][0]) for a in parts.values())
    cross = np.zeros((v, v))
    if n_total > 0:
        mean = sum(np.asarray(a["sum"]) for a in parts.values()) / n_total
        for a in parts.values():
            n = float(a["count"][0])
            if n > 0:
                d = a["sum"] / n - mean
                cross += a["cross"] + n * np.outer(d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.diag(cross))
        corr = cross / np.outer(sd, sd)
        cov = cross / (n_total - 1) if n_total > 1 else np.full((v, v), np.nan)
    return {
        "variables": list(query.variables),
        "count": n_total,
        "correlation": corr.tolist(),
        "covariance": cov.tolist(),
        "suppressed": suppressed_cells(parts, "count"),
    }
