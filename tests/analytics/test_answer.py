"""A site's answer to an analytics task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedcare.analytics.answer import answer_plan, answer_task
from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.data.base import FederatedDataset
from fedcare.errors import ConfigError, DataError
from tests.analytics.helpers import OPEN, close, pooled_frame, replies, run


def test_cohort_count_and_restricted_moments(heart: FederatedDataset) -> None:
    cohort = {
        "type": "cohort",
        "filter": "age >= 60 and sex == 1",
        "queries": [{"type": "moments", "variables": ["chol"]}],
    }
    result, grid = run(heart, {"queries": [cohort]})
    pooled = pooled_frame(heart)
    rows = pooled[(pooled["age"] >= 60) & (pooled["sex"] == 1)]
    got = result.queries[0]
    assert got["count"] == len(rows)
    assert close(got["queries"][0]["mean"][0], rows["chol"].dropna().mean())
    assert all(r.num_samples == 0 for r in replies(grid))  # no row count outside the cells


def _plan(queries: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"analytics": {"queries": queries}, **extra}


FRAME = pd.DataFrame({"age": [50.0, 61.0, 70.0, 80.0, 45.0, 66.0], "sex": [1.0] * 6})


def test_answer_names_arrays_by_query_path() -> None:
    queries: list[dict[str, Any]] = [
        {"type": "count"},
        {"type": "cohort", "filter": "age > 60", "queries": [{"type": "count"}]},
    ]
    arrays, metrics = answer_plan(FRAME, _plan(queries), OPEN, np.random.default_rng(0))
    assert arrays["q0/count"].tolist() == [6.0]
    assert arrays["q1/count"].tolist() == [4.0] and arrays["q1.0/count"].tolist() == [4.0]
    assert metrics == {
        "epsilon": 0.0,
        "noised_releases": 0.0,
        "min_cell": 1.0,
        "complementary": 0.0,
    }


def test_only_limits_the_answer_and_coordinator_cannot_lower_min_cell() -> None:
    queries = [{"type": "count"}, {"type": "count", "name": "again"}]
    plan = _plan(queries, only=["q1"])
    plan["analytics"]["min_cell"] = 0
    policy = AnalyticsPolicy(min_cell=10)
    arrays, metrics = answer_plan(FRAME, plan, policy, np.random.default_rng(0))
    assert sorted(arrays) == ["q1/count", "q1/count:suppressed"]
    assert arrays["q1/count"].tolist() == [0.0] and arrays["q1/count:suppressed"].tolist() == [1]
    assert metrics["min_cell"] == 10.0


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"analytics": None}, "task plan 'analytics': expected a mapping"),
        (_plan([{"type": "count"}], only="q0"), "'only' must be a list"),
        (
            _plan(
                [
                    {
                        "type": "quantiles",
                        "variable": "age",
                        "probabilities": [0.5],
                        "lower": 0,
                        "upper": 1,
                    }
                ]
            ),
            "carries no thresholds",
        ),
    ],
)
def test_bad_plans_are_refused(plan: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        answer_plan(FRAME, plan, OPEN, np.random.default_rng(0))


def test_task_columns_must_match_the_site_features(heart: FederatedDataset) -> None:
    site = heart.sites[0]
    with pytest.raises(DataError, match="2 feature names for 13 feature columns"):
        answer_task(site, _plan([{"type": "count"}], columns=["a", "b"]), 0, OPEN)
    with pytest.raises(ConfigError, match="'columns' must be a list of names"):
        answer_task(site, _plan([{"type": "count"}], columns="age"), 0, OPEN)
