"""A site's answer to an analytics task: every query's statistics, suppressed and noised.

The task plan carries ``analytics`` (the spec as JSON), and for quantile rounds ``only`` (the
query paths to answer) and ``thresholds`` (path -> thresholds). Query ``i`` answers under the
path ``q<i>``; the queries inside cohort ``i`` under ``q<i>.<j>``. Arrays travel as
``<path>/<name>``. Only aggregates leave: counts (withheld below ``min_cell``, and withheld
further where a withheld one could be derived from the rest of the answer: see
:mod:`fedcare.analytics.complementary`), sums derived from released counts, masks, and the KM
exact-mode times when the site opted in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.complementary import complementary_withholding
from fedcare.analytics.correlation import site_correlation
from fedcare.analytics.count import site_count
from fedcare.analytics.disclosure import AnalyticsPolicy, Releaser
from fedcare.analytics.filters import filter_mask
from fedcare.analytics.frame import site_frame
from fedcare.analytics.histogram import site_histogram
from fedcare.analytics.kaplan_meier import site_kaplan_meier
from fedcare.analytics.mean_variance import site_moments
from fedcare.analytics.quantiles import site_quantiles
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
from fedcare.data.base import SiteData
from fedcare.errors import ConfigError
from fedcare.privacy.mechanisms import system_rng
from fedcare.records.arrays import ArrayRecord

__all__ = ["answer_plan", "answer_task", "query_paths"]


def query_paths(spec: AnalyticsSpec) -> list[tuple[str, Any]]:
    """``(path, query)`` for every query, cohort members after their cohort."""
    out: list[tuple[str, Any]] = []
    for i, query in enumerate(spec.queries):
        out.append((f"q{i}", query))
        if isinstance(query, CohortQuery):
            out.extend((f"q{i}.{j}", sub) for j, sub in enumerate(query.queries))
    return out


def _one(frame: pd.DataFrame, query: Any, rel: Releaser, thresholds: Any) -> dict[str, np.ndarray]:
    if isinstance(query, CountQuery):
        return site_count(frame, query, rel)
    if isinstance(query, MomentsQuery):
        return site_moments(frame, query, rel)
    if isinstance(query, HistogramQuery):
        return site_histogram(frame, query, rel)
    if isinstance(query, CorrelationQuery):
        return site_correlation(frame, query, rel)
    if isinstance(query, KaplanMeierQuery):
        return site_kaplan_meier(frame, query, rel)
    if isinstance(query, QuantilesQuery):
        if thresholds is None:
            raise ConfigError(f"quantiles query {query.name!r}: the task carries no thresholds")
        return site_quantiles(frame, query, rel, thresholds)
    raise ConfigError(f"unknown query type {type(query).__name__}")


def _wanted(only: Sequence[str] | None, path: str) -> bool:
    return only is None or path in only


def answer_plan(
    frame: pd.DataFrame,
    plan: Mapping[str, Any],
    policy: AnalyticsPolicy,
    rng: np.random.Generator,
) -> tuple[ArrayRecord, dict[str, float]]:
    """The arrays and metrics (``epsilon``, ``min_cell``, ``complementary``: cells withheld
    only so that no withheld cell can be derived) a site sends for ``plan``.

    Raises
    ------
    ConfigError
        If the plan's spec is invalid, names an unknown column, or asks for exact
        Kaplan-Meier from a site whose ``min_cell`` is above 1.
    """
    spec = AnalyticsSpec.from_dict(plan.get("analytics"), source="task plan 'analytics'")
    only = plan.get("only")
    if only is not None and not isinstance(only, list | tuple):
        raise ConfigError(f"task plan 'only' must be a list of query paths, got {only!r}")
    min_cell = max(policy.min_cell, spec.min_cell)
    zeros = policy.suppress_zeros

    def exact(withhold: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        plain = Releaser(min_cell, suppress_zeros=zeros, withhold=withhold)
        return _answer(frame, spec, plan, plain)

    withhold = complementary_withholding(frame, spec, plan, exact, min_cell)
    rel = Releaser(min_cell, noise=spec.noise, rng=rng, suppress_zeros=zeros, withhold=withhold)
    arrays = _answer(frame, spec, plan, rel)
    metrics = {
        "epsilon": rel.epsilon,
        "noised_releases": float(rel.releases),
        "min_cell": float(min_cell),
        "complementary": float(sum(int(m.sum()) for m in withhold.values())),
    }
    return ArrayRecord(arrays, copy=False), metrics


def _answer(
    frame: pd.DataFrame, spec: AnalyticsSpec, plan: Mapping[str, Any], rel: Releaser
) -> dict[str, np.ndarray]:
    """Every wanted query's released arrays, by ``<path>/<name>``."""
    only = plan.get("only")
    thresholds = plan.get("thresholds") or {}
    arrays: dict[str, np.ndarray] = {}
    for i, query in enumerate(spec.queries):
        path = f"q{i}"
        rel.scope = path
        if isinstance(query, CohortQuery):
            cohort = frame.loc[filter_mask(query.filter, frame)]
            if _wanted(only, path):
                _put(arrays, path, rel.counts("count", np.array([float(len(cohort))])))
            for j, sub in enumerate(query.queries):
                if _wanted(only, f"{path}.{j}"):
                    rel.scope = f"{path}.{j}"
                    stats = _one(cohort, sub, rel, thresholds.get(f"{path}.{j}"))
                    _put(arrays, f"{path}.{j}", stats)
        elif _wanted(only, path):
            _put(arrays, path, _one(frame, query, rel, thresholds.get(path)))
    return arrays


def _put(arrays: dict[str, np.ndarray], path: str, stats: Mapping[str, np.ndarray]) -> None:
    for name, value in stats.items():
        arrays[f"{path}/{name}"] = value


def answer_task(
    data: SiteData,
    plan: Mapping[str, Any],
    seed: int,
    policy: AnalyticsPolicy,
    *,
    frame: pd.DataFrame | None = None,
) -> tuple[ArrayRecord, dict[str, float]]:
    """:func:`answer_plan` on a site's table.

    ``frame``: a mapped dataset's harmonized table, whose columns are the schema's variable
    names (the site knows them; ``plan["columns"]`` is ignored). Without it, the site's
    built-in arrays, their feature columns named by ``plan["columns"]``.

    Noise comes from ``seed`` only when the policy sets ``seeded_noise`` (simulation);
    otherwise from a fresh OS-entropy seed the coordinator cannot know.

    Raises
    ------
    ConfigError
        As :func:`answer_plan`; a variable this site's table lacks is named with the site's
        variables.
    """
    if frame is None:
        columns = plan.get("columns") or ()
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise ConfigError(f"task plan 'columns' must be a list of names, got {columns!r}")
        frame = site_frame(data, columns)
    rng = np.random.default_rng(seed) if policy.seeded_noise else system_rng()
    return answer_plan(frame, plan, policy, rng)
