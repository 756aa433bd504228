"""What each released count of an analytics answer counts, as a vector over the site's rows.

For complementary suppression (:mod:`fedcare.analytics.complementary`) every count cell a
query releases is described by its *membership vector* (1 for each row of the site's table the
cell counts, else 0) and the *value vectors* released with it (a sum over those rows is the
dot product with ``x``; a sum of squares or a cross-product with ``x**2`` or ``x*y``). Any
linear relation an outsider can use between released numbers (bins + outside = non-missing,
a cohort's count against the bins of the whole table, a binary variable's sum against a bin)
is a linear relation between these vectors, so they decide what can be derived.

Cells are keyed like the answer's arrays: ``"<path>/<array>"`` with one vector per flat index.
Exact-mode Kaplan-Meier has none (it needs ``min_cell <= 1``, where nothing is withheld).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.filters import filter_mask
from fedcare.analytics.frame import column
from fedcare.analytics.spec import (
    AnalyticsSpec,
    CohortQuery,
    CorrelationQuery,
    CountQuery,
    HistogramQuery,
    KaplanMeierQuery,
    MomentsQuery,
    QuantilesQuery,
)

__all__ = ["CountCells", "answer_cells"]


@dataclass
class CountCells:
    """The cells of one count array: ``members[i]`` is cell ``i``'s membership vector,
    ``values[i]`` the value vectors released with it (withheld with it)."""

    members: list[np.ndarray]
    values: list[list[np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.values:
            self.values = [[] for _ in self.members]


def _x(frame: pd.DataFrame, var: str, scope: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    """``(values with NaN as 0, non-missing mask within scope)`` over all rows."""
    x = column(frame, var, what=what)
    present = scope & ~np.isnan(x)
    return np.where(present, x, 0.0), present


def _count(scope: np.ndarray) -> dict[str, CountCells]:
    return {"count": CountCells([scope.astype(float)])}


def _moments(frame: pd.DataFrame, q: MomentsQuery, scope: np.ndarray) -> dict[str, CountCells]:
    members, values = [], []
    for var in q.variables:
        x, present = _x(frame, var, scope, f"moments query {q.name!r}")
        if var in q.bounds:
            x = np.where(present, np.clip(x, *q.bounds[var]), 0.0)
        members.append(present.astype(float))
        values.append([x, x * x])  # m2 with count and sum gives the sum of squares
    return {"count": CountCells(members, values)}


def _histogram(frame: pd.DataFrame, q: HistogramQuery, scope: np.ndarray) -> dict[str, CountCells]:
    x, present = _x(frame, q.variable, scope, f"histogram query {q.name!r}")
    edges = np.asarray(q.edges, dtype=np.float64)
    k = len(edges) - 1
    index = np.searchsorted(edges, x, side="right") - 1
    index = np.where(x == edges[-1], k - 1, index)  # numpy's last bin is closed
    inside = present & (index >= 0) & (index < k)
    bins = [(inside & (index == b)).astype(float) for b in range(k)]
    return {
        "count": CountCells(bins),
        "count_outside": CountCells([(present & ~inside).astype(float)]),
    }


def _correlation(
    frame: pd.DataFrame, q: CorrelationQuery, scope: np.ndarray
) -> dict[str, CountCells]:
    what = f"correlation query {q.name!r}"
    cols = [column(frame, v, what=what) for v in q.variables]
    complete = scope & ~np.isnan(np.column_stack(cols)).any(axis=1)
    xs = []
    for var, x in zip(q.variables, cols, strict=True):
        x = np.where(complete, x, 0.0)
        xs.append(np.clip(x, *q.bounds[var]) * complete if var in q.bounds else x)
    values = list(xs) + [a * b for i, a in enumerate(xs) for b in xs[i:]]
    return {"count": CountCells([complete.astype(float)], [values])}


def _kaplan_meier(
    frame: pd.DataFrame, q: KaplanMeierQuery, scope: np.ndarray
) -> dict[str, CountCells]:
    if q.mode == "exact":
        return {}
    what = f"kaplan_meier query {q.name!r}"
    t, e = column(frame, q.time, what=what), column(frame, q.event, what=what)
    ok = scope & ~(np.isnan(t) | np.isnan(e))
    event = ok & (e == 1.0)
    censored = ok & (e == 0.0)
    grid = np.asarray(q.grid, dtype=np.float64)
    prev = np.concatenate([[-np.inf], grid[:-1]])
    pairs = list(zip(prev, grid, strict=True))
    at_risk = [((event & (t > p)) | (censored & (t >= g))).astype(float) for p, g in pairs]
    events = [(event & (t > p) & (t <= g)).astype(float) for p, g in pairs]
    return {"count_at_risk": CountCells(at_risk), "count_events": CountCells(events)}


def _quantiles(
    frame: pd.DataFrame, q: QuantilesQuery, scope: np.ndarray, thresholds: Any
) -> dict[str, CountCells]:
    x, present = _x(frame, q.variable, scope, f"quantiles query {q.name!r}")
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    le = [(present & (x <= v)).astype(float) for v in t]
    return {"count": CountCells([present.astype(float)]), "count_le": CountCells(le)}


def _query(
    frame: pd.DataFrame, query: Any, scope: np.ndarray, thresholds: Any
) -> dict[str, CountCells]:
    if isinstance(query, CountQuery):
        return _count(scope)
    if isinstance(query, MomentsQuery):
        return _moments(frame, query, scope)
    if isinstance(query, HistogramQuery):
        return _histogram(frame, query, scope)
    if isinstance(query, CorrelationQuery):
        return _correlation(frame, query, scope)
    if isinstance(query, KaplanMeierQuery):
        return _kaplan_meier(frame, query, scope)
    if isinstance(query, QuantilesQuery):
        return {} if thresholds is None else _quantiles(frame, query, scope, thresholds)
    return {}


def answer_cells(
    frame: pd.DataFrame,
    spec: AnalyticsSpec,
    only: Sequence[str] | None,
    thresholds: Mapping[str, Any],
) -> dict[str, CountCells]:
    """Every count cell the answer to ``spec`` releases (restricted to ``only``), by array key
    ``"<path>/<array>"``, as vectors over the rows of ``frame``."""
    everyone = np.ones(len(frame), dtype=bool)
    out: dict[str, CountCells] = {}

    def add(path: str, query: Any, scope: np.ndarray) -> None:
        if only is None or path in only:
            for name, cells in _query(frame, query, scope, thresholds.get(path)).items():
                out[f"{path}/{name}"] = cells

    for i, query in enumerate(spec.queries):
        path = f"q{i}"
        if isinstance(query, CohortQuery):
            cohort = np.asarray(filter_mask(query.filter, frame), dtype=bool)
            add(path, CountQuery(type="count"), cohort)
            for j, sub in enumerate(query.queries):
                add(f"{path}.{j}", sub, cohort)
        else:
            add(path, query, everyone)
    return out
