"""Placeholder of the clinical summary (replaced by the full module of issue 15's H1 branch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["combine_sites", "site_curves", "site_summary", "summary_problem"]


def site_summary(
    task: str, y: Any, scores: Any, *, time: Any = None, spec: Mapping[str, Any], rng: Any
) -> dict[str, Any]:
    n = int(np.shape(y)[0])
    out: dict[str, Any] = {"version": 1, "task": task, "n": n}
    if task == "binary" and n:
        pos = int(np.sum(np.asarray(y) == 1))
        out["prevalence"] = pos / n
        out["no_information_rate"] = max(pos, n - pos) / n
    return out


def summary_problem(summary: Mapping[str, Any]) -> str | None:
    n = summary.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return f"'n' must be a whole number >= 0, got {n!r}"
    return None


def site_curves(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def combine_sites(
    per_site: Mapping[str, Mapping[str, Any]], spec: Mapping[str, Any]
) -> dict[str, Any]:
    return {"n": sum(int(v.get("n", 0)) for v in per_site.values()), "sites": len(per_site)}
