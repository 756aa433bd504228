"""Site governance over a real federation: refusals reach the coordinator, revocation holds.

Real coordinator, real :class:`SiteAgent` threads over mutual TLS, each with its policy file,
approvals store and signed audit log (built as ``fedcare site start`` builds them). Each
refusing site shows the coordinator its reason; a steward who revokes mid-study (with the
``fedcare site revoke`` command) stops that site's work for the study, as the site's audit
log shows, and the study continues or fails according to ``min_sites``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.governance import build_governance, site_refusals, steward_store
from fedcare.cli.main import app
from fedcare.coordinator.server import Coordinator
from fedcare.records.study import StudyConfig
from fedcare.site.agent import SiteAgent
from fedcare.site.approvals import ApprovalStore
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from .helpers import (
    AgentThreads,
    Kits,
    heart_data,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_round,
    wait_for_status,
)

pytestmark = pytest.mark.slow
SOON = datetime.now(timezone.utc) + timedelta(days=1)
PAST = datetime.now(timezone.utc) - timedelta(minutes=1)


def study(name: str, **overrides: Any) -> StudyConfig:
    # Local scaling: no statistics round, which needs every site (refusing ones too).
    return heart_study(name=name, preprocessing={"impute": "mean", "scale": "local"}, **overrides)


def start_agent(
    agents: AgentThreads, kits: Kits, site: str, hospital: str, root: Path, port: int,
    policy: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """A governed agent thread for ``site`` serving ``hospital``'s data; returns its state dir."""
    state = root / "state" / site
    policy_file = None
    if policy is not None:
        policy_file = root / f"{site}-policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy))
    governance = build_governance(state, kits.sites[site], policy_file)
    events: list[str] = []
    agent = SiteAgent(
        kits.sites[site], heart_data(hospital), state_dir=state,
        coordinator=f"127.0.0.1:{port}", poll_wait=1.0, time_limit=120.0,
        on_event=events.append, governance=governance,
    )  # fmt: skip

    def main() -> None:
        try:
            agent.run(agents.stop)
        except BaseException as err:
            agents.errors[site] = err

    thread = threading.Thread(target=main, name=f"agent-{site}", daemon=True)
    agents.agents[site], agents.threads[site] = agent, thread
    agents.events[site] = events  # type: ignore[assignment]
    thread.start()
    return state


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Kits, Coordinator, AgentThreads]]:
    require_mirror()
    sites = ["good", "unapproved", "expired", "revoked", "not-allowed", "weak-mode", "quitter"]
    kits = provision(tmp_path / "federation", sites, name="governance")
    # liveness 120 s (helpers' default 10 s): the revocation test's two slow fits load both
    # cores, and a quitter whose heartbeats came late read as gone ("no reply before the
    # deadline") instead of answering approval-revoked, at 10 s and again (in a full CI run,
    # load from the suite's worker processes) at 30 s; nothing here tests silence
    with running_coordinator(
        kits, tmp_path / "home", round_retries=1, liveness_s=120.0
    ) as coordinator:
        agents = AgentThreads()
        try:
            yield kits, coordinator, agents
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()


def audit_entries(state: Path) -> list[dict[str, Any]]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_each_refusal_reaches_the_coordinator_with_its_reason(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    the_study = study("gov-refusals", rounds=1, min_sites=1)
    h = plan_for_study(the_study).hash
    name = the_study.name
    layout = {
        "good": ("cleveland", None, "approve"),
        "unapproved": ("hungary", None, None),
        "expired": ("switzerland", None, "expire"),
        "revoked": ("va", None, "revoke"),
        "not-allowed": ("cleveland", {"allowed_studies": ["another-study"]}, "approve"),
        "weak-mode": ("hungary", {"min_privacy_mode": "secure"}, "approve"),
    }
    states = {}
    for site, (hospital, policy, decision) in layout.items():
        state = tmp_path / "state" / site
        store = steward_store(state, kits.sites[site])
        if decision is not None:
            store.approve(name, h, PAST if decision == "expire" else SOON)
        if decision == "revoke":
            store.revoke(name)
        states[site] = start_agent(agents, kits, site, hospital, tmp_path, coordinator.port, policy)
    wait_for_round(coordinator.store, study_id := submit(coordinator.store, the_study), 0)
    wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)

    record = coordinator.store.get_round(study_id, 1).record
    failed = record["fit"]["failed_sites"]
    expected = {
        "unapproved": "plan-not-approved",
        "expired": "approval-expired",
        "revoked": "approval-revoked",
        "not-allowed": "policy-study-not-allowed",
        "weak-mode": "policy-privacy-mode",
    }
    assert {s: failed.get(s, "").split(":")[0] for s in expected} == expected, failed
    assert h in failed["unapproved"] and "fedcare site approve" in failed["unapproved"]
    assert "'secure'" in failed["weak-mode"] and "another-study" in failed["not-allowed"]
    assert "good" not in failed and record["fit"]["num_contributions"] == 1
    lines = site_refusals(coordinator.store, study_id)
    mine = [line for line in lines if line.startswith("site unapproved refused round 1 (")]
    assert len(mine) == 1 and "): plan-not-approved: plan " in mine[0], lines
    for site in expected:  # a refusal never touches data
        events = [e["event"] for e in audit_entries(states[site])]
        assert "task-executed" not in events and "decision" in events, (site, events)
    good = [e["event"] for e in audit_entries(states["good"])]
    assert good.count("task-executed") >= 2 and "reply-sent" in good  # fit + evaluate
    # open mode: the fit reply was staged as its header + the worker's file (its arrays were
    # not written again), and the digest the audit recorded is the one the coordinator stored
    sent = [e["data"] for e in audit_entries(states["good"]) if e["event"] == "reply-sent"]
    stored = coordinator.store.replies_for_round(study_id, 1, 1, kind="fit")
    [fit] = [r.payload_digest for r in stored if r.site_id == "good"]
    assert fit in [d["sha256"] for d in sent if d["kind"] == "fit"], (fit, sent)
    assert agents.agents["good"].transfers.written < sum(d["size_bytes"] for d in sent)
    pending = ApprovalStore.in_state_dir(states["unapproved"]).list()
    assert [(p.study, p.plan_hash, p.status) for p in pending] == [(name, h, "pending")]


def test_revoking_mid_study_stops_the_site_and_min_sites_decides(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    store = coordinator.store
    goes_on = study("gov-goes-on", rounds=10, min_sites=1)
    stops = study("gov-stops", rounds=10, min_sites=2)
    states = {}
    for site, hospital in (("good", "cleveland"), ("quitter", "hungary")):
        approvals = steward_store(tmp_path / "state" / site, kits.sites[site])
        for s in (goes_on, stops):
            approvals.approve(s.name, plan_for_study(s).hash, SOON)
        states[site] = start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
    ids = {s.name: submit(store, s) for s in (goes_on, stops)}
    for study_id in ids.values():
        wait_for_round(store, study_id, 1, describe=agents.describe)
    runner = CliRunner()
    for s in (goes_on, stops):
        result = runner.invoke(app, [
            "site", "revoke", "--study", s.name, "--note", "consent withdrawn",
            "--state", str(states["quitter"]), "--kit", str(kits.sites["quitter"]),
        ])  # fmt: skip
        assert result.exit_code == 0, result.output

    wait_for_status(store, ids[goes_on.name], "completed", describe=agents.describe)
    failed = wait_for_status(store, ids[stops.name], "failed", describe=agents.describe)
    assert "approval-revoked" in (failed.reason or ""), failed.reason

    rounds = store.list_rounds(ids[goes_on.name])
    last = rounds[-1].record["fit"]
    reasons = [  # refused a fit or an evaluate task
        (r.record.get(part) or {}).get("failed_sites", {}).get("quitter", "")
        for r in rounds[1:]
        for part in ("fit", "evaluate")
    ]
    assert any(r.startswith("approval-revoked: the site withdrew") for r in reasons), reasons
    # after that the quitter is withheld from the study (named), no longer asked every round
    assert any("quitter" in r.record.get("withdrawn_sites", {}) for r in rounds)
    assert last["num_contributions"] == 1 and last["contributing_sites"] == ["good"], last
    entries = audit_entries(states["quitter"])
    revocations = [i for i, e in enumerate(entries) if e["event"] == "revocation"]
    assert len(revocations) == 2, [e["event"] for e in entries]
    for i in revocations:  # after each study's revocation, none of its tasks ran to the end
        study_id = ids[entries[i]["data"]["study"]]
        after = [e for e in entries[i + 1 :] if e["data"].get("task_id", "").startswith(study_id)]
        stopped = {e["data"]["task_id"] for e in after if e["event"] == "task-stopped"}
        executed = [e["data"]["task_id"] for e in after if e["event"] == "task-executed"]
        ran = [t for t in executed if t not in stopped]  # one that slipped in was stopped
        assert ran == [], f"tasks ran on the site's data after the revocation: {ran}"
        decisions = [e["data"] for e in after if e["event"] == "decision"]
        refused = {d["reason_kind"] for d in decisions if d["outcome"] == "refused"}
        assert refused <= {"approval-revoked"}, refused
    assert any(
        e["event"] == "decision" and e["data"].get("reason_kind") == "approval-revoked"
        for e in entries[revocations[0] + 1 :]
    )


def test_revoking_stops_a_task_that_is_running_on_the_sites_data(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    """A slow fit task (~120,000 one-row steps, 8-20 s) is running when the steward revokes: the
    worker is stopped, the coordinator gets ``approval-revoked`` and the audit shows the stop."""
    kits, coordinator, agents = federation
    training = {"epochs": 600, "lr": 0.001, "batch_size": 1, "optimizer": "sgd", "l2": 0.01}
    slow = study("gov-slow", rounds=1, min_sites=1, training=training)
    states = {}
    for site, hospital in (("good", "cleveland"), ("quitter", "hungary")):
        steward_store(tmp_path / "state" / site, kits.sites[site]).approve(
            slow.name, plan_for_study(slow).hash, SOON
        )
        states[site] = start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
    study_id = submit(coordinator.store, slow)

    deadline = time.monotonic() + 60
    while not any(
        e["event"] == "task-executed" and e["data"]["kind"] == "fit"
        for e in audit_entries(states["quitter"])
    ):
        assert time.monotonic() < deadline, "the quitter never started its fit task"
        time.sleep(0.1)
    result = CliRunner().invoke(app, [
        "site", "revoke", "--study", slow.name, "--note", "stop now",
        "--state", str(states["quitter"]), "--kit", str(kits.sites["quitter"]),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)

    fit = coordinator.store.list_rounds(study_id)[-1].record["fit"]
    assert fit["contributing_sites"] == ["good"]
    assert fit["failed_sites"]["quitter"].startswith("approval-revoked")
    events = [e["event"] for e in audit_entries(states["quitter"])]
    executed = events.index("task-executed")
    assert events.index("revocation") > executed, events  # revoked while it ran
    assert "task-stopped" in events[executed:], events
    sent = [e for e in audit_entries(states["quitter"]) if e["event"] == "reply-sent"]
    assert [e["data"]["error_kind"] for e in sent if e["data"]["kind"] == "fit"] == [
        "approval-revoked"
    ]
