"""run_analytics over a grid: failures."""

from __future__ import annotations

import pytest

from fedcare.analytics.run import run_analytics
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.base import FederatedDataset
from fedcare.errors import RoundFailedError
from fedcare.records.messages import Reply, Task
from fedcare.simulation.analytics import analytics_grid
from fedcare.transport.inmemory import InMemoryGrid
from tests.analytics.helpers import OPEN


def test_no_site_answering_fails_the_run() -> None:
    def broken(task: Task) -> Reply:
        raise RuntimeError("disk on fire")

    spec = AnalyticsSpec.from_dict({"queries": [{"type": "count"}]})
    with pytest.raises(RoundFailedError, match="disk on fire"):
        run_analytics(InMemoryGrid({"a": broken}), spec, study_id="t")


def test_unknown_column_is_named(heart: FederatedDataset) -> None:
    spec = AnalyticsSpec.from_dict({"queries": [{"type": "moments", "variables": ["weight"]}]})
    with pytest.raises(RoundFailedError, match="unknown variable 'weight'"):
        run_analytics(analytics_grid(heart, OPEN), spec, study_id="t")


def test_a_failing_site_is_reported_and_the_others_combined(heart: FederatedDataset) -> None:
    grid = analytics_grid(heart, OPEN)
    handlers = {s: grid._handlers[s] for s in heart.site_ids}

    def broken(task: Task) -> Reply:
        return Reply.failure(task, "refused", "the data steward said no")

    handlers["va"] = broken
    spec = AnalyticsSpec.from_dict({"queries": [{"type": "count"}]})
    result = run_analytics(InMemoryGrid(handlers), spec, study_id="t")
    assert result.sites == ["cleveland", "hungary", "switzerland"]
    assert result.failures == {"va (round 1)": "refused: the data steward said no"}
    assert result.queries[0]["count"] == 740 - 130
    assert result.to_dict()["failures"] == result.failures
