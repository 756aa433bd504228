"""Histograms on shared bin edges: per-site bin counts (small ones withheld), added up."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser, suppressed_cells
from fedcare.analytics.frame import column
from fedcare.analytics.spec import HistogramQuery

__all__ = ["combine_histogram", "site_histogram"]


def site_histogram(
    frame: pd.DataFrame, query: HistogramQuery, rel: Releaser
) -> dict[str, np.ndarray]:
    """``count`` per bin (numpy's bins: the last one is closed) and ``count_outside``."""
    x = column(frame, query.variable, what=f"histogram query {query.name!r}")
    x = x[~np.isnan(x)]
    counts, _ = np.histogram(x, bins=np.asarray(query.edges, dtype=np.float64))
    outside = len(x) - int(counts.sum())
    return {
        **rel.counts("count", counts.astype(np.float64)),
        **rel.counts("count_outside", np.array([outside], dtype=np.float64)),
    }


def combine_histogram(query: HistogramQuery, parts: Parts) -> dict[str, Any]:
    """Summed released bin counts; ``complete[k]`` is false where some site withheld bin k."""
    k = len(query.edges) - 1
    total = np.zeros(k)
    complete = np.ones(k, dtype=bool)
    per_site: dict[str, list[float | None]] = {}
    for site, arrays in parts.items():
        hidden = arrays["count:suppressed"].astype(bool)
        total += np.where(hidden, 0.0, arrays["count"])
        complete &= ~hidden
        per_site[site] = [
            None if h else float(c) for c, h in zip(arrays["count"], hidden, strict=True)
        ]
    return {
        "variable": query.variable,
        "edges": list(query.edges),
        "counts": total.tolist(),
        "complete": complete.tolist(),
        "per_site": per_site,
        "outside": float(
            sum(
                float(a["count_outside"][0])
                for a in parts.values()
                if not a["count_outside:suppressed"][0]
            )
        ),
        "suppressed": suppressed_cells(parts, "count"),
    }
