"""Row counts: the site sends its number of rows (withheld when small); the coordinator adds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser, suppressed_cells
from fedcare.analytics.spec import CountQuery

__all__ = ["combine_count", "site_count"]


def site_count(frame: pd.DataFrame, query: CountQuery, rel: Releaser) -> dict[str, np.ndarray]:
    """``count`` (shape ``(1,)``) and its mask."""
    return rel.counts("count", np.array([len(frame)], dtype=np.float64))


def combine_count(query: CountQuery, parts: Parts) -> dict[str, Any]:
    """The sum of released counts, per-site counts (``None`` when withheld)."""
    per_site: dict[str, float | None] = {}
    for site, arrays in parts.items():
        hidden = bool(arrays["count:suppressed"][0])
        per_site[site] = None if hidden else float(arrays["count"][0])
    total = sum(v for v in per_site.values() if v is not None)
    return {
        "count": total,
        "per_site": per_site,
        "complete": all(v is not None for v in per_site.values()),
        "suppressed": suppressed_cells(parts, "count"),
    }
