"""Kaplan-Meier curves from per-site event and at-risk counts.

Grid mode (default, any ``min_cell``): per grid point ``g_k`` a site sends
``count_events = #{event, g_{k-1} < T <= g_k}`` and
``count_at_risk = #{event, T > g_{k-1}} + #{censored, T >= g_k}``. The pooled product
``S(g_k) = prod_{j<=k} (1 - D_j / N_j)`` is then *exactly* the Kaplan-Meier estimate of the
pooled data with event times rounded up and censoring times rounded down to the grid; so it
equals the pooled Kaplan-Meier curve of the raw data at ``g_k`` whenever every event time up
to ``g_k`` is a grid point (censoring times need not be). A site whose count at ``g_k`` is
withheld drops out at that point (the result marks it), which biases the curve there.

Exact mode (only when the site's ``min_cell <= 1``): a site sends ``time`` (its distinct
observed times) with ``count_events`` and ``count_censored`` at each: the de-identified
survival data itself. The pooled curve then equals Kaplan-Meier on the pooled rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import Parts, Releaser, suppressed_cells
from fedcare.analytics.frame import column
from fedcare.analytics.spec import KaplanMeierQuery
from fedcare.errors import ConfigError, DataError

__all__ = ["combine_kaplan_meier", "km_product", "site_kaplan_meier"]


def _survival(frame: pd.DataFrame, query: KaplanMeierQuery) -> tuple[np.ndarray, np.ndarray]:
    what = f"kaplan_meier query {query.name!r}"
    t = column(frame, query.time, what=what)
    e = column(frame, query.event, what=what)
    ok = ~(np.isnan(t) | np.isnan(e))
    t, e = t[ok], e[ok]
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise DataError(f"{what}: event column {query.event!r} must be 0/1")
    return t, e.astype(bool)


def site_kaplan_meier(
    frame: pd.DataFrame, query: KaplanMeierQuery, rel: Releaser
) -> dict[str, np.ndarray]:
    """Grid or exact counts (see the module docstring)."""
    t, e = _survival(frame, query)
    if query.mode == "exact":
        if rel.noise is not None:
            raise ConfigError(
                f"kaplan_meier query {query.name!r}: exact mode releases the times themselves; "
                "DP noise cannot protect them (use grid mode)"
            )
        if rel.min_cell > 1:
            raise ConfigError(
                f"kaplan_meier query {query.name!r}: exact mode releases counts at every "
                f"distinct time; this site's min_cell is {rel.min_cell} (needs <= 1)"
            )
        times, inverse = np.unique(t, return_inverse=True)
        events = np.bincount(inverse, weights=e.astype(float), minlength=len(times))
        censored = np.bincount(inverse, weights=(~e).astype(float), minlength=len(times))
        return {
            "time": times,
            **rel.counts("count_events", events),
            **rel.counts("count_censored", censored),
        }
    grid = np.asarray(query.grid, dtype=np.float64)
    prev = np.concatenate([[-np.inf], grid[:-1]])
    et = t[e]
    ct = t[~e]
    events = ((et[None, :] > prev[:, None]) & (et[None, :] <= grid[:, None])).sum(axis=1)
    at_risk = (et[None, :] > prev[:, None]).sum(axis=1) + (ct[None, :] >= grid[:, None]).sum(axis=1)
    # one row is at risk at up to every grid point, and an event in one interval
    out = rel.counts("count_at_risk", at_risk.astype(np.float64), cells_per_row=len(grid))
    out.update(
        rel.counts(
            "count_events",
            events.astype(np.float64),
            also=out["count_at_risk:suppressed"].astype(bool),
        )
    )
    return out


def km_product(events: np.ndarray, at_risk: np.ndarray) -> np.ndarray:
    """``prod_{j<=k} (1 - d_j / n_j)`` (a factor of 1 where ``n_j`` is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1.0 - events / np.where(at_risk > 0, at_risk, 1.0), 1.0)
    return np.cumprod(factor)


def _grid_curve(d: np.ndarray, n: np.ndarray, hide: np.ndarray) -> np.ndarray:
    curve = km_product(np.where(hide, 0.0, d), np.where(hide, 0.0, n))
    return np.where(np.cumsum(hide) > 0, np.nan, curve)


def combine_kaplan_meier(query: KaplanMeierQuery, parts: Parts) -> dict[str, Any]:
    """Pooled (and per-site) survival at the grid points, or at every pooled time (exact)."""
    if query.mode == "exact":
        return _combine_exact(parts)
    grid = np.asarray(query.grid, dtype=np.float64)
    d_total, n_total = np.zeros(len(grid)), np.zeros(len(grid))
    complete = np.ones(len(grid), dtype=bool)
    per_site: dict[str, list[float | None]] = {}
    for site, a in parts.items():
        hide = a["count_events:suppressed"].astype(bool) | a["count_at_risk:suppressed"].astype(
            bool
        )
        d_total += np.where(hide, 0.0, a["count_events"])
        n_total += np.where(hide, 0.0, a["count_at_risk"])
        complete &= ~hide
        curve = _grid_curve(a["count_events"], a["count_at_risk"], hide)
        per_site[site] = [None if np.isnan(v) else float(v) for v in curve]
    return {
        "mode": "grid",
        "time": grid.tolist(),
        "survival": km_product(d_total, n_total).tolist(),
        "events": d_total.tolist(),
        "at_risk": n_total.tolist(),
        "complete": complete.tolist(),
        "per_site": per_site,
        "per_site_time": grid.tolist(),
        "suppressed": _hidden_points(parts),
    }


def _hidden_points(parts: Parts) -> dict[str, list[int]]:
    """Per site, the grid indices where its events or at-risk count was withheld."""
    risk = suppressed_cells(parts, "count_at_risk")
    events = suppressed_cells(parts, "count_events")
    return {s: sorted(set(risk.get(s, [])) | set(events.get(s, []))) for s in {*risk, *events}}


def _combine_exact(parts: Parts) -> dict[str, Any]:
    times = np.unique(np.concatenate([a["time"] for a in parts.values()] or [np.zeros(0)]))
    d = np.zeros(len(times))
    c = np.zeros(len(times))
    per_site: dict[str, list[float | None]] = {}
    for site, a in parts.items():
        idx = np.searchsorted(times, a["time"])
        np.add.at(d, idx, a["count_events"])
        np.add.at(c, idx, a["count_censored"])
        sd = np.zeros(len(times))
        sc = np.zeros(len(times))
        sd[idx], sc[idx] = a["count_events"], a["count_censored"]
        site_curve = km_product(sd, _at_risk(sd, sc))
        per_site[site] = [float(v) for v in site_curve]
    n = _at_risk(d, c)
    return {
        "mode": "exact",
        "time": times.tolist(),
        "survival": km_product(d, n).tolist(),
        "events": d.tolist(),
        "at_risk": n.tolist(),
        "complete": [True] * len(times),
        "per_site": per_site,
        "per_site_time": times.tolist(),
        "suppressed": {
            **suppressed_cells(parts, "count_events"),
            **suppressed_cells(parts, "count_censored"),
        },
    }


def _at_risk(d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Number at risk at each time: all rows minus those who left at earlier times."""
    exits = d + c
    return exits.sum() - np.concatenate([[0.0], np.cumsum(exits)[:-1]])
