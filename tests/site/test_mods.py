import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fedcare.records.messages import Reply, Task
from fedcare.site.approvals import ApprovalStore
from fedcare.site.governance import SiteGovernance, run_watched
from fedcare.site.mods import chain
from fedcare.site.plans import Refusal, analytics_plan_hash
from fedcare.site.policy import SitePolicy
from fedcare.transport.framed import frame_reply

from .governance_helpers import Recorder, plan, task

LATER = datetime.now(timezone.utc) + timedelta(days=1)
ROWS = {"heart-disease": 100}


class Inner:
    """The runtime stand-in: counts the tasks that reach it and replies with data info."""

    def __init__(self) -> None:
        self.seen: list[Task] = []

    def __call__(self, t: Task) -> Reply:
        self.seen.append(t)
        info = {"dataset_fingerprint": "fp-123", "num_rows": "100"}
        return Reply(t.study_id, t.round, t.site_id, t.kind, num_samples=100, info=info)


def governed(
    tmp_path: Path, policy: dict[str, Any] | None = None, *, approve: bool = True, **kw: Any
) -> tuple[SiteGovernance, Recorder, Inner, Any]:
    approvals = ApprovalStore.in_state_dir(tmp_path)
    if approve:
        approvals.approve("heart", plan().hash, LATER)
    audit = Recorder()
    gov = SiteGovernance(SitePolicy.from_dict(policy or {}), approvals, audit, **kw)
    inner = Inner()
    handler = chain(gov.mods(ROWS), lambda t: gov.execute(t, inner, lambda: None))
    return gov, audit, inner, handler


def test_an_approved_task_runs_with_plan_info_and_a_full_audit_trail(tmp_path: Path) -> None:
    _, audit, inner, handler = governed(tmp_path)
    reply = handler(task())
    assert reply.ok and len(inner.seen) == 1
    assert reply.info["plan_hash"] == plan().hash
    assert reply.info["approval_id"].startswith("approval-")
    assert audit.events == ["task-received", "decision", "task-executed", "reply-sent"]
    assert audit.last("decision")["outcome"] == "accepted"
    sent = audit.last("reply-sent")
    payload = frame_reply(reply).to_bytes()  # the reply as protocol 1.2 sends it
    assert sent["size_bytes"] == len(payload)
    assert sent["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (sent["dataset_fingerprint"], sent["num_rows"]) == ("fp-123", "100")


@pytest.mark.parametrize(
    ("policy", "the_task", "kind", "needle"),
    [
        ({"allowed_studies": ["other"]}, {}, "policy-study-not-allowed", "'heart'"),
        ({"min_privacy_mode": "secure"}, {}, "policy-privacy-mode", "'open'"),
        ({"epsilon_cap": {"heart-disease": 1.0}}, {"epsilon": 4.0}, "policy-epsilon-cap", "4"),
        ({"allowed_outputs": ["metrics"]}, {}, "policy-output-not-allowed", "model_updates"),
        (
            {"allowed_outputs": ["model_updates", "metrics", "statistics"]},
            {"validation": {"report": True}},
            "policy-output-not-allowed",
            "clinical validation summary",
        ),
        ({"max_rounds": 3}, {}, "policy-max-rounds", "at most 3"),
        ({"min_cohort": 500}, {}, "policy-min-cohort", "100 rows"),
    ],
)
def test_policy_refusals_never_reach_the_data(
    tmp_path: Path, policy: dict[str, Any], the_task: dict[str, Any], kind: str, needle: str
) -> None:
    _, audit, inner, handler = governed(tmp_path, policy)
    t = task(task_plan={**plan().to_task_plan(), **the_task})
    reply = handler(t)
    assert reply.error is not None and reply.error.kind == kind, reply.error
    assert needle in reply.error.message
    assert inner.seen == [] and "task-executed" not in audit.events
    decision = audit.last("decision")
    assert decision["outcome"] == "refused" and decision["reason_kind"] == kind
    assert audit.last("reply-sent")["error_kind"] == kind


def test_unapproved_expired_refused_and_revoked_plans_are_refused(tmp_path: Path) -> None:
    gov, audit, inner, handler = governed(tmp_path, approve=False)
    h = plan().hash
    first = handler(task())
    assert first.error is not None and first.error.kind == "plan-not-approved"
    assert h in first.error.message and "fedcare site approve" in first.error.message
    assert [a.status for a in gov.approvals.list()] == ["pending"]
    gov.approvals.approve("heart", h, datetime.now(timezone.utc) - timedelta(seconds=1))
    assert handler(task()).error.kind == "approval-expired"
    gov.approvals.refuse("heart", h, "no")
    assert handler(task()).error.kind == "plan-refused"
    gov.approvals.approve("heart", h, LATER)
    assert handler(task()).ok
    gov.approvals.revoke("heart")
    revoked = handler(task())
    assert revoked.error is not None and revoked.error.kind == "approval-revoked"
    assert len(inner.seen) == 1 and audit.events.count("task-executed") == 1


def test_approve_all_runs_unapproved_plans_and_says_so(tmp_path: Path) -> None:
    _, _, inner, handler = governed(tmp_path, approve=False, approve_all=True)
    reply = handler(task())
    assert reply.ok and reply.info["approval_id"] == "approve-all" and len(inner.seen) == 1


def test_plan_checks_run_before_approval(tmp_path: Path) -> None:
    _, _, inner, handler = governed(tmp_path, approve_all=True)
    reply = handler(task(config={"lr": 9.0, "epochs": 1, "seed": 1}))
    assert reply.error is not None and reply.error.kind == "plan-config-mismatch"
    assert inner.seen == []


def analytics_task(min_cell: int, **extra: Any) -> Task:
    spec = {"name": "cohorts", "queries": [{"kind": "count"}], "min_cell": min_cell}
    the_plan = {"analytics": spec, "columns": ["age"], "dataset": "heart-disease", **extra}
    return task("analytics", task_plan=the_plan, config={"min_cell": min_cell})


def test_analytics_specs_need_approval_and_get_the_policy_min_cell(tmp_path: Path) -> None:
    gov, _, inner, handler = governed(tmp_path, {"min_cohort": 25}, approve=False)
    first = handler(analytics_task(5))
    assert first.error is not None and first.error.kind == "plan-not-approved"
    assert "'cohorts'" in first.error.message and inner.seen == []
    approved = analytics_plan_hash(analytics_task(5).plan)
    assert approved == analytics_plan_hash(analytics_task(5, thresholds={"q0": [1.0]}).plan)
    gov.approvals.approve("cohorts", approved, LATER)
    assert handler(analytics_task(5)).ok
    assert handler(analytics_task(40)).error is not None  # another spec: another hash
    gov.approvals.approve("cohorts", analytics_plan_hash(analytics_task(40).plan), LATER)
    assert handler(analytics_task(40)).ok
    assert [t.config["min_cell"] for t in inner.seen] == [25, 40]
    assert [t.plan["analytics"]["min_cell"] for t in inner.seen] == [25, 40]


def test_a_long_analytics_task_raised_to_the_cohort_floor_keeps_its_approval(
    tmp_path: Path,
) -> None:
    """The floor rewrites the spec after the approval; the watch checks the approved one."""
    approvals = ApprovalStore.in_state_dir(tmp_path)
    approvals.approve("cohorts", analytics_plan_hash(analytics_task(5).plan), LATER)
    policy = SitePolicy.from_dict({"min_cohort": 25})
    gov = SiteGovernance(policy, approvals, Recorder(), poll_s=0.02)
    stopped = threading.Event()

    def slow(t: Task) -> Reply:  # several approval polls while it runs
        assert t.plan["analytics"]["min_cell"] == 25
        stopped.wait(0.3)
        return Reply(t.study_id, t.round, t.site_id, t.kind)

    handler = chain(gov.mods(ROWS), lambda t: gov.execute(t, slow, stopped.set))
    reply = handler(analytics_task(5))
    assert reply.ok, reply.error
    assert not stopped.is_set()


def test_run_watched_stops_a_running_task_when_the_approval_goes(tmp_path: Path) -> None:
    stopped = threading.Event()
    revoked_at = time.monotonic() + 0.3

    def slow(t: Task) -> Reply:
        stopped.wait(20)
        return Reply.failure(t, "worker-crashed", "killed")

    def check() -> Refusal | None:
        return Refusal("approval-revoked", "withdrew") if time.monotonic() > revoked_at else None

    start = time.monotonic()
    reply = run_watched(task(), slow, stop=stopped.set, check=check, poll_s=0.05)
    assert reply.error is not None and reply.error.kind == "approval-revoked"
    assert "stopped" in reply.error.message and stopped.is_set()
    assert time.monotonic() - start < 2.0


def test_run_watched_returns_the_reply_or_raises_the_error() -> None:
    ok = run_watched(task(), Inner(), stop=lambda: None, check=lambda: None, poll_s=0.01)
    assert ok.ok and ok.num_samples == 100

    def broken(t: Task) -> Reply:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_watched(task(), broken, stop=lambda: None, check=lambda: None, poll_s=0.01)


def test_revoking_while_a_task_runs_stops_it_and_audits_it(tmp_path: Path) -> None:
    approvals = ApprovalStore.in_state_dir(tmp_path)
    approvals.approve("heart", plan().hash, LATER)
    audit = Recorder()
    gov = SiteGovernance(SitePolicy(), approvals, audit, poll_s=0.05)
    stopped = threading.Event()

    def slow(t: Task) -> Reply:
        stopped.wait(20)
        return Reply.failure(t, "worker-crashed", "killed")

    threading.Timer(0.3, lambda: approvals.revoke("heart", note="consent withdrawn")).start()
    handler = chain(gov.mods(ROWS), lambda t: gov.execute(t, slow, stopped.set))
    reply = handler(task())
    assert reply.error is not None and reply.error.kind == "approval-revoked"
    assert "consent withdrawn" in reply.error.message and stopped.is_set()
    assert audit.events == [
        "task-received", "decision", "task-executed", "task-stopped", "reply-sent"
    ]  # fmt: skip
    again = handler(task())
    assert again.error is not None and again.error.kind == "approval-revoked"
    assert audit.events.count("task-executed") == 1
