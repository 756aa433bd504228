"""A site refuses a secure-aggregation setup weaker than the plan its steward approved."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fedcare.records.plan import TrainingPlan
from fedcare.secure.secagg.graph import default_degree, default_threshold, neighbour_graph
from fedcare.secure.secagg.messages import HEADER_KEY, STAGE_KEY, RoundSetup
from fedcare.secure.secagg.quantize import QuantSpec
from fedcare.secure.secagg.setup_check import setup_refusal
from fedcare.site.plans import Refusal, check_task_plan

from ..site.governance_helpers import plan, task

SITES = tuple(f"s{i:02d}" for i in range(20))


def header(degree: int, threshold: int, site: str = "s00") -> dict[str, Any]:
    graph = neighbour_graph(SITES, degree, seed=3)
    setup = RoundSetup("study", 1, SITES, graph, threshold, 10, QuantSpec())
    return setup.header_for(site)


def test_a_setup_as_the_coordinator_builds_it_from_the_plan_passes() -> None:
    k = default_degree(len(SITES))
    assert setup_refusal(header(k, default_threshold(k)), {}) is None
    assert setup_refusal(header(10, 8), {"neighbours": 10, "threshold": 8}) is None
    assert setup_refusal(header(12, 9), {"neighbours": 10, "threshold": 8}) is None  # stronger


def test_fewer_neighbours_or_a_lower_threshold_than_approved_is_refused() -> None:
    why = setup_refusal(header(6, 4), {"neighbours": 10, "threshold": 8})
    assert why is not None and "gives this site 6 neighbours" in why and "needs 10" in why
    why = setup_refusal(header(10, 6), {"neighbours": 10, "threshold": 8})
    assert why is not None and "threshold is 6" in why and "at least 8" in why
    k = default_degree(len(SITES))  # plan leaves them unset: the defaults for 20 sites
    why = setup_refusal(header(k - 2, default_threshold(k - 2)), {})
    assert why is not None and f"needs {k} among 20 sites" in why


def test_a_site_count_below_the_points_seen_is_refused() -> None:
    lying = {**header(4, 3), "sites": 5}  # claims a small round, so a small degree would do
    why = setup_refusal(lying, {})
    assert why is not None and "says 5 sites but gives point" in why


def test_a_small_round_caps_what_the_plan_asks() -> None:
    few = SITES[:5]
    graph = neighbour_graph(few, 4, seed=1)
    setup = RoundSetup("study", 1, few, graph, 5, 10, QuantSpec())
    assert setup_refusal(setup.header_for("s00"), {"neighbours": 10, "threshold": 8}) is None


def _advertise(p: TrainingPlan, hdr: dict[str, Any]) -> Any:
    config = {"seed": 1, STAGE_KEY: "advertise", HEADER_KEY: json.dumps(hdr)}
    return replace(task(task_plan=p.to_task_plan(), config=config), kind="secagg")


@pytest.mark.parametrize("weak", [(6, 4), (10, 6)])
def test_the_site_refuses_the_weaker_advertise_task(weak: tuple[int, int]) -> None:
    p = plan(privacy={"mode": "secure", "secagg": {"neighbours": 10, "threshold": 8}})
    refusal = check_task_plan(_advertise(p, header(*weak)))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-pipeline-mismatch"
    assert f"weaker than plan {p.hash} approved" in refusal.message
    assert isinstance(check_task_plan(_advertise(p, header(10, 8))), TrainingPlan)
