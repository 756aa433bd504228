"""The analytics query spec: what a study lead asks the sites to compute.

A spec is a list of queries plus optional DP noise, validated by pydantic; every error names
the field (``queries.2.edges: ...``). The spec travels to sites as JSON in ``Task.plan``
(``{"analytics": spec.model_dump(mode="json"), ...}``) and each site validates it again.

Query types (``type:``): ``count``, ``moments``, ``histogram``, ``quantiles``, ``correlation``,
``kaplan_meier`` and ``cohort`` (a filter expression; its count, then any other queries
restricted to the cohort).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedcare.errors import ConfigError
from fedcare.records.config_file import read_yaml, validate_config

__all__ = [
    "AnalyticsSpec",
    "CohortQuery",
    "CorrelationQuery",
    "CountQuery",
    "HistogramQuery",
    "KaplanMeierQuery",
    "MomentsQuery",
    "NoiseSpec",
    "QuantilesQuery",
    "Query",
    "SimpleQuery",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _increasing(values: list[float], what: str) -> list[float]:
    if len(values) < 2:
        raise ValueError(f"{what} needs at least 2 values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite, got {values}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what} must be strictly increasing, got {values}")
    return values


class NoiseSpec(_Strict):
    """DP noise added by each site to every released statistic (after suppression).

    Counts have sensitivity 1; sums need ``bounds`` on their variable (values are clipped to
    them). Each noised release spends ``epsilon`` (basic composition); a site reports the total.
    """

    mechanism: Literal["laplace", "gaussian"] = "laplace"
    epsilon: float = Field(gt=0)
    delta: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _gaussian_delta(self) -> NoiseSpec:
        if self.mechanism == "gaussian" and not 0 < self.delta < 1:
            raise ValueError(f"gaussian noise needs 0 < delta < 1, got delta={self.delta}")
        return self


class CountQuery(_Strict):
    """The number of rows (patients)."""

    type: Literal["count"]
    name: str = "count"


class MomentsQuery(_Strict):
    """Count, mean and (sample, ddof=1) variance of each variable over its non-missing rows."""

    type: Literal["moments"]
    variables: list[str] = Field(min_length=1)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    name: str = "moments"


class HistogramQuery(_Strict):
    """Counts per bin on shared edges (numpy semantics: ``[e0, e1), ..., [e_{k-1}, e_k]``)."""

    type: Literal["histogram"]
    variable: str
    edges: list[float]
    name: str = "histogram"

    @field_validator("edges")
    @classmethod
    def _edges(cls, v: list[float]) -> list[float]:
        return _increasing(v, "edges")


class QuantilesQuery(_Strict):
    """Pooled quantiles by k-ary search on counts ``#(x <= t)`` over shared thresholds.

    ``lower``/``upper`` are public a-priori bounds of the variable. Each of ``rounds`` rounds
    asks for ``points`` thresholds per probability, shrinking the bracket by ``points + 1``;
    the answer is within ``(upper - lower) / (points + 1) ** rounds`` above the pooled
    ``inverted_cdf`` quantile (the smallest value with ``F(x) >= p``).
    """

    type: Literal["quantiles"]
    variable: str
    probabilities: list[float] = Field(min_length=1)
    lower: float
    upper: float
    rounds: int = Field(default=12, ge=1, le=40)
    points: int = Field(default=15, ge=1, le=255)
    name: str = "quantiles"

    @field_validator("probabilities")
    @classmethod
    def _probs(cls, v: list[float]) -> list[float]:
        bad = [p for p in v if not 0 < p <= 1]
        if bad:
            raise ValueError(f"probabilities must lie in (0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _bracket(self) -> QuantilesQuery:
        _increasing([self.lower, self.upper], "lower, upper")
        return self

    @property
    def error_bound(self) -> float:
        return float((self.upper - self.lower) / float(self.points + 1) ** self.rounds)


class CorrelationQuery(_Strict):
    """Pearson correlation matrix over rows complete in all ``variables`` (listwise)."""

    type: Literal["correlation"]
    variables: list[str] = Field(min_length=2)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    name: str = "correlation"


class KaplanMeierQuery(_Strict):
    """Kaplan-Meier curve of ``time``/``event`` columns.

    ``grid`` mode (default) sends, per grid point ``g_k``, the events in ``(g_{k-1}, g_k]`` and
    the number at risk (events after ``g_{k-1}``, censored at or after ``g_k``): exactly the KM
    of the data with event times rounded up and censoring times rounded down to the grid, so
    it equals the pooled KM at ``g_k`` whenever every event time up to ``g_k`` is a grid point.
    ``exact`` mode sends events and censorings at every distinct time (the survival data
    itself, as counts); a site answers it only when its policy's ``min_cell`` is at most 1.
    """

    type: Literal["kaplan_meier"]
    mode: Literal["grid", "exact"] = "grid"
    grid: list[float] | None = None
    time: str = "time"
    event: str = "event"
    name: str = "kaplan_meier"

    @model_validator(mode="after")
    def _grid(self) -> KaplanMeierQuery:
        if self.mode == "grid":
            if self.grid is None:
                raise ValueError("grid mode needs 'grid': the shared time points")
            _increasing(self.grid, "grid")
        elif self.grid is not None:
            raise ValueError("exact mode takes no 'grid'")
        return self


SimpleQuery = Annotated[
    CountQuery
    | MomentsQuery
    | HistogramQuery
    | QuantilesQuery
    | CorrelationQuery
    | KaplanMeierQuery,
    Field(discriminator="type"),
]


class CohortQuery(_Strict):
    """Rows matching ``filter`` (e.g. ``age >= 60 and sex == 1``): their count, then
    ``queries`` restricted to them."""

    type: Literal["cohort"]
    filter: str = Field(min_length=1)
    queries: list[SimpleQuery] = Field(default_factory=list)
    name: str = "cohort"

    @field_validator("filter")
    @classmethod
    def _parse(cls, v: str) -> str:
        from fedcare.analytics.filters import parse_filter

        try:
            parse_filter(v)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return v


Query = Annotated[
    CountQuery
    | MomentsQuery
    | HistogramQuery
    | QuantilesQuery
    | CorrelationQuery
    | KaplanMeierQuery
    | CohortQuery,
    Field(discriminator="type"),
]


class AnalyticsSpec(_Strict):
    """A list of queries, optional DP noise and a coordinator-side minimum cell size.

    ``min_cell`` here can only raise a site's own minimum, never lower it.
    """

    name: str = "analytics"
    dataset: str | None = None
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    queries: list[Query] = Field(min_length=1)
    noise: NoiseSpec | None = None
    min_cell: int = Field(default=0, ge=0)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "analytics spec") -> AnalyticsSpec:
        """Validate ``data``; errors name ``source``, the field and the problem."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        return validate_config(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> AnalyticsSpec:
        path = Path(path)
        data = read_yaml(path, "analytics file")
        if isinstance(data, Mapping) and "analytics" in data and "queries" not in data:
            data = data["analytics"]
        spec = cls.from_dict(data, source=str(path))
        if not spec.dataset:
            return spec
        # dataset files named by relative paths (e.g. dataset 'cdm') are found from this folder
        from fedcare.records.config_file import with_base_dir

        options = with_base_dir(spec.dataset, spec.dataset_options, path.parent)
        if options == spec.dataset_options:
            return spec
        return spec.model_copy(update={"dataset_options": options})
