"""A malicious coordinator cannot bend what a site approved: the site enforces the plan.

Real coordinator, a real governed :class:`SiteAgent` over mutual TLS, with the steward's
approvals of a ``secure``, a ``private`` and an ``open`` plan. The test plays a malicious
coordinator: it writes tasks straight into the coordinator's store (task row + payload
artifact), for an idle study the coordinator's own runner leaves alone, so the agent pulls
exactly what the test wrote. A ``fit`` task of the approved ``secure`` plan with its masking
stripped, one of the ``private`` plan without its noise, one with ``prox_mu`` changed and an
``evaluate`` task asking for the training split are each refused; the coordinator's reply rows
name the reason, no update is stored for them, and the site's audit shows they never ran on
data. The same tasks as the plan fixes them run (the control).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcare.cli.governance import site_refusals, steward_store
from fedcare.coordinator.rows import ReplyInfo
from fedcare.coordinator.server import Coordinator
from fedcare.models.registry import build_model
from fedcare.records.messages import Task
from fedcare.records.plan import TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import round_config
from fedcare.strategy.plan import plan_for_study
from fedcare.strategy.site_half import site_pipeline_for
from fedcare.transport.codec import encode_task

from ..conftest import require_mirror
from .helpers import (
    AgentThreads,
    Kits,
    heart_data,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)
from .test_governance import audit_entries, start_agent, study
from .wire import NOWHERE

pytestmark = pytest.mark.slow
SOON = datetime.now(timezone.utc) + timedelta(days=1)
SITE = "steward"
PLANS: dict[str, dict[str, Any]] = {
    "secure": {"privacy": {"mode": "secure"}},
    "private": {"privacy": {"mode": "private", "dp": {"noise_multiplier": 1.0, "clip_norm": 0.5}}},
    "open": {},
}


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Kits, Coordinator, AgentThreads]]:
    require_mirror()
    kits = provision(tmp_path / "federation", [SITE], name="plan-enforcement")
    with running_coordinator(kits, tmp_path / "home") as coordinator:
        agents = AgentThreads()
        try:
            yield kits, coordinator, agents
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()


def studies() -> dict[str, StudyConfig]:
    return {m: study(f"enforce-{m}", rounds=10, **o) for m, o in PLANS.items()}


def deliver(coordinator: Coordinator, task: Task, timeout: float = 90.0) -> ReplyInfo:
    """Write ``task`` into the coordinator's store as its own runner would; wait for the reply."""
    store = coordinator.store
    digest = store.artifacts.put(encode_task(task))
    deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
    store.create_tasks(task.study_id, task.round, 1, [(task.site_id, task.kind, digest, deadline)])
    coordinator.hub.notify()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        replies = [
            r for r in store.replies_for_round(task.study_id, task.round, 1) if r.kind == task.kind
        ]
        if replies:
            return replies[0]
        time.sleep(0.2)
    raise AssertionError(f"no reply to {task.task_id} within {timeout:.0f}s")


def test_tampered_tasks_are_refused_with_the_reason_at_the_coordinator(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    plans: dict[str, TrainingPlan] = {m: plan_for_study(s) for m, s in studies().items()}
    approvals = steward_store(tmp_path / "state" / SITE, kits.sites[SITE])
    for p in plans.values():
        approvals.approve(p.study, p.hash, SOON)
    state = start_agent(agents, kits, SITE, "cleveland", tmp_path, coordinator.port)
    # an idle study (no site offers its dataset): the runner never touches our tasks
    idle = submit(coordinator.store, study("enforce-idle", dataset={"name": NOWHERE}, min_sites=1))
    wait_for_status(coordinator.store, idle, "running", timeout=30)
    data = heart_data("cleveland").datasets["heart-disease"].prepared().data
    assert data is not None
    params = build_model({"kind": "logistic"}).init_params(
        data.train.input_shape, np.random.default_rng(0)
    )

    def task(mode: str, round: int, kind: str = "fit", **changes: Any) -> Task:
        s = studies()[mode]
        p = plans[mode]
        base = Task(
            study_id=idle, round=round, site_id=SITE, kind=kind,  # type: ignore[arg-type]
            params=params, config={**p.training, "seed": 7} if kind == "fit" else {"seed": 7},
            plan=round_config(s, idle).plan, pipeline=site_pipeline_for(p),
        )  # fmt: skip
        return replace(base, **changes)

    full = site_pipeline_for(plans["private"])
    tampered = {
        1: task("secure", 1, pipeline={}),  # masking stripped: the raw update would leave
        2: task("private", 2, pipeline={k: v for k, v in full.items() if k != "distributed_dp"}),
        3: task("open", 3, config={**plans["open"].training, "prox_mu": 1000.0, "seed": 7}),
        4: task("open", 4, kind="evaluate", config={"seed": 7, "split": "train"}),
    }
    expected = {
        1: ("plan-pipeline-mismatch", "secagg missing"),
        2: ("plan-pipeline-mismatch", "distributed_dp missing"),
        3: ("plan-config-mismatch", "prox_mu=1000.0 (plan: not set)"),
        4: ("plan-config-mismatch", "split='train' (plan: not set)"),
    }
    for rnd, t in tampered.items():
        reply = deliver(coordinator, t)
        kind, needle = expected[rnd]
        assert reply.error_kind == kind, (rnd, reply)
        assert needle in (reply.error_message or ""), (rnd, reply.error_message)
        assert reply.payload_digest is None and reply.num_samples == 0  # nothing left the site
        assert coordinator.store.list_tasks(idle, rnd)[0].status == "failed"
    (line,) = site_refusals(coordinator.store, idle)  # the operator's view: latest per site
    assert line.startswith("site steward refused round 4 (evaluate): plan-config-mismatch: ")

    # the control: the same tasks as the plan fixes them run on the site's data
    fit = deliver(coordinator, task("open", 5))
    evaluate = deliver(coordinator, task("open", 6, kind="evaluate"))
    assert fit.error_kind is None and fit.payload_digest is not None, fit
    assert evaluate.error_kind is None and evaluate.payload_digest is not None, evaluate

    entries = audit_entries(state)
    ran = {e["data"]["task_id"] for e in entries if e["event"] == "task-executed"}
    assert ran == {task("open", 5).task_id, task("open", 6, kind="evaluate").task_id}, ran
    refused = [
        e["data"]["reason_kind"]
        for e in entries
        if e["event"] == "decision" and e["data"]["outcome"] == "refused"
    ]
    assert sorted(refused) == sorted(k for k, _ in expected.values())
    accepted = [
        e["data"]
        for e in entries
        if e["event"] == "decision" and e["data"]["outcome"] == "accepted"
    ]
    assert all(d["privacy_mode"] == "open" for d in accepted), accepted  # no secure decision
