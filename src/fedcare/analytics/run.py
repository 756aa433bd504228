"""The coordinator's side of federated analytics: one function over any Grid.

:func:`run_analytics` sends the spec to every site as ``analytics`` tasks through
:func:`fedcare.strategy.loop.exchange` (round ``start_round``), then, while quantile searches
are unfinished, one more round per search step with only those queries. It combines each
query's released statistics (pure functions, one per statistic) into an
:class:`AnalyticsResult` that says, per query, which sites withheld which cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedcare.analytics.answer import query_paths
from fedcare.analytics.correlation import combine_correlation
from fedcare.analytics.count import combine_count
from fedcare.analytics.disclosure import Parts
from fedcare.analytics.histogram import combine_histogram
from fedcare.analytics.kaplan_meier import combine_kaplan_meier
from fedcare.analytics.mean_variance import combine_moments_query
from fedcare.analytics.quantiles import QuantileSearch
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
from fedcare.errors import RoundFailedError
from fedcare.grid import Grid
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.strategy.base import Instruction
from fedcare.strategy.loop import RoundConfig, exchange

__all__ = ["AnalyticsResult", "analytics_plan", "combine_query", "run_analytics"]


@dataclass(frozen=True)
class AnalyticsResult:
    """Combined results, one entry per top-level query (cohorts hold their members)."""

    name: str
    sites: list[str]
    queries: list[dict[str, Any]]
    failures: dict[str, str] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)
    min_cell: dict[str, int] = field(default_factory=dict)
    rounds: int = 1
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "name": self.name,
                "sites": self.sites,
                "queries": self.queries,
                "failures": self.failures,
                "epsilon": self.epsilon,
                "min_cell": self.min_cell,
                "rounds": self.rounds,
                "spec": self.spec,
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _split(replies: Sequence[Reply]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """path -> site -> name -> array."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for reply in replies:
        for key, value in reply.arrays.items():
            path, _, name = key.partition("/")
            out.setdefault(path, {}).setdefault(reply.site_id, {})[name] = value
    return out


def combine_query(query: Any, parts: Parts) -> dict[str, Any]:
    """The combined result of one (non-cohort) query from its sites' statistics."""
    if isinstance(query, CountQuery):
        return combine_count(query, parts)
    if isinstance(query, MomentsQuery):
        return combine_moments_query(query, parts)
    if isinstance(query, HistogramQuery):
        return combine_histogram(query, parts)
    if isinstance(query, CorrelationQuery):
        return combine_correlation(query, parts)
    if isinstance(query, KaplanMeierQuery):
        return combine_kaplan_meier(query, parts)
    raise TypeError(f"no combiner for {type(query).__name__}")


@dataclass
class _Exchanges:
    """One run's traffic: builds each round's tasks, notes failures and epsilon per site."""

    grid: Grid
    cfg: RoundConfig
    base: dict[str, Any]
    round: int
    sites: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)

    def ask(self, **plan: Any) -> list[Reply]:
        cfg = replace(self.cfg, plan={**self.base, **plan})
        got: dict[str, str] = {}
        ins = [Instruction(s) for s in self.sites]
        replies = list(exchange(self.grid, cfg, self.round, "analytics", ArrayRecord(), ins, got))
        self.failures.update({f"{s} (round {self.round})": why for s, why in got.items()})
        for r in replies:
            self.epsilon[r.site_id] = self.epsilon.get(r.site_id, 0.0) + r.metrics.get(
                "epsilon", 0.0
            )
        self.round += 1
        return replies


def _search(
    ex: _Exchanges, searches: dict[str, QuantileSearch], parts: Mapping[str, Parts]
) -> dict[str, Parts]:
    """Run the quantile searches to the end (``searches`` is updated); the last answers."""
    last: dict[str, Parts] = {}
    while True:
        for p, search in list(searches.items()):
            if not search.done and p in parts:
                searches[p] = search.update(search.thresholds(), parts[p])
                last[p] = parts[p]
        open_paths = [p for p, s in searches.items() if not s.done]
        if not open_paths:
            return last
        asked = {p: searches[p].thresholds().tolist() for p in open_paths}
        parts = _split(ex.ask(only=open_paths, thresholds=asked))
        if not parts:
            return last


def analytics_plan(spec: AnalyticsSpec, columns: Sequence[str] = ()) -> dict[str, Any]:
    """The plan every task of ``spec`` carries (before a round's ``only``/``thresholds``): what
    a steward approves by its hash (:func:`fedcare.site.plans.analytics_plan_hash`)."""
    plan: dict[str, Any] = {"analytics": spec.model_dump(mode="json"), "columns": list(columns)}
    if spec.dataset:
        plan["dataset"] = spec.dataset  # site agents pick the dataset the plan names
    return plan


def run_analytics(
    grid: Grid,
    spec: AnalyticsSpec,
    *,
    study_id: str,
    seed: int = 0,
    columns: Sequence[str] = (),
    round_timeout: float | None = None,
    start_round: int = 1,
) -> AnalyticsResult:
    """Run ``spec`` over every site of ``grid`` and combine the answers.

    Parameters
    ----------
    columns:
        Names of the sites' feature columns (a built-in dataset's public feature names);
        empty: sites name them ``x0``, ``x1``, ... A site with a mapped dataset ignores them:
        its harmonized table has the schema's variable names.
    start_round:
        Task round of the first exchange; quantile steps use the following rounds.

    Raises
    ------
    RoundFailedError
        If no site answers the first round.
    """
    base = analytics_plan(spec, columns)
    cfg = RoundConfig(study_id=study_id, num_rounds=1, seed=seed, round_timeout=round_timeout)
    ex = _Exchanges(grid, cfg, base, start_round, grid.site_ids())
    searches = {
        p: QuantileSearch.start(q) for p, q in query_paths(spec) if isinstance(q, QuantilesQuery)
    }
    replies = ex.ask(thresholds={p: s.thresholds().tolist() for p, s in searches.items()})
    if not replies:
        raise RoundFailedError(
            f"analytics {spec.name!r}: no site answered; failures: {ex.failures}",
            round=start_round,
            replied=0,
            required=1,
        )
    first = _split(replies)
    quantile_parts = _search(ex, searches, first)
    return AnalyticsResult(
        name=spec.name,
        sites=sorted(r.site_id for r in replies),
        queries=_results(spec, first, searches, quantile_parts),
        failures=ex.failures,
        epsilon=ex.epsilon,
        min_cell={r.site_id: int(r.metrics.get("min_cell", 0)) for r in replies},
        rounds=ex.round - start_round,
        spec=spec.model_dump(mode="json"),
    )


def _results(
    spec: AnalyticsSpec,
    parts: Mapping[str, Parts],
    searches: Mapping[str, QuantileSearch],
    quantile_parts: Mapping[str, Parts],
) -> list[dict[str, Any]]:
    def one(path: str, query: Any) -> dict[str, Any]:
        head = {"path": path, "type": query.type, "name": query.name}
        if isinstance(query, QuantilesQuery):
            body = searches[path].result(quantile_parts.get(path, {}))
            return {**head, **body, "sites": sorted(quantile_parts.get(path, {}))}
        got = parts.get(path, {})
        return {**head, **combine_query(query, got), "sites": sorted(got)}

    out = []
    for i, query in enumerate(spec.queries):
        path = f"q{i}"
        if isinstance(query, CohortQuery):
            got = parts.get(path, {})
            count = combine_count(CountQuery(type="count", name=query.name), got)
            members = [one(f"{path}.{j}", sub) for j, sub in enumerate(query.queries)]
            head = {"path": path, "type": "cohort", "name": query.name, "filter": query.filter}
            out.append({**head, **count, "sites": sorted(got), "queries": members})
        else:
            out.append(one(path, query))
    return out
