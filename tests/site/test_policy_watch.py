"""The policy file is re-read when it changes: audited, applied to the next task, and an
invalid file refuses every task until it is fixed."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from fedcare.records.messages import Reply, Task
from fedcare.site.approvals import ApprovalStore
from fedcare.site.governance import SiteGovernance
from fedcare.site.mods import chain
from fedcare.site.policy_watch import PolicyFile

from .governance_helpers import Recorder, plan, task

LATER = datetime.now(timezone.utc) + timedelta(days=1)


def write(path: Path, policy: dict[str, Any] | str, bump: int) -> None:
    path.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
    os.utime(path, ns=(bump * 10**9, bump * 10**9))  # a distinct stamp, whatever the clock


def governed(tmp_path: Path) -> tuple[Path, Recorder, list[Task], Any]:
    path = tmp_path / "policy.yaml"
    write(path, {"min_cohort": 10}, 1)
    approvals = ApprovalStore.in_state_dir(tmp_path)
    approvals.approve("heart", plan().hash, LATER)
    audit = Recorder()
    watched = PolicyFile(path, audit)
    gov = SiteGovernance(watched.initial, approvals, audit, policy_file=watched)
    seen: list[Task] = []

    def inner(t: Task) -> Reply:
        seen.append(t)
        return Reply(t.study_id, t.round, t.site_id, t.kind, num_samples=100)

    return path, audit, seen, chain(gov.mods({"heart-disease": 100}), inner)


def test_an_edited_policy_applies_to_the_next_task_and_is_audited(tmp_path: Path) -> None:
    path, audit, seen, handler = governed(tmp_path)
    old = hashlib.sha256(path.read_bytes()).hexdigest()
    assert handler(task()).ok and len(seen) == 1
    write(path, {"min_cohort": 10, "allowed_studies": ["another"]}, 2)
    reply = handler(task())
    assert reply.error is not None and reply.error.kind == "policy-study-not-allowed"
    changed = audit.last("policy-changed")
    assert changed["old_sha256"] == old
    assert changed["new_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert changed["changed"] == {"allowed_studies": {"old": None, "new": ["another"]}}
    handler(task())  # unchanged file: no new entry
    assert audit.events.count("policy-changed") == 1
    assert len(seen) == 1


def test_an_invalid_policy_refuses_every_task_until_fixed(tmp_path: Path) -> None:
    path, audit, seen, handler = governed(tmp_path)
    write(path, {"min_cohort": -3}, 2)
    for _ in range(2):
        reply = handler(task())
        assert reply.error is not None and reply.error.kind == "policy-invalid"
        assert str(path) in reply.error.message and "min_cohort" in reply.error.message
    assert audit.events.count("policy-invalid") == 1 and not seen
    assert "min_cohort" in audit.last("policy-invalid")["problem"]
    write(path, "min_privacy_mode: [unclosed", 3)
    assert handler(task()).error.kind == "policy-invalid"  # type: ignore[union-attr]
    path.unlink()
    reply = handler(task())
    assert reply.error is not None and "missing" in reply.error.message
    write(path, {"min_cohort": 10}, 4)
    assert handler(task()).ok and len(seen) == 1
    assert audit.events.count("policy-invalid") == 3
    assert audit.last("policy-changed")["changed"] == {}


def test_the_agent_gives_its_idle_worker_a_changed_policys_limits(tmp_path: Path) -> None:
    from fedcare.cli.governance import build_governance
    from fedcare.site.agent import SiteAgent
    from fedcare.site.config import SiteDataConfig
    from fedcare.transport.provisioning import create_federation

    fed = create_federation(tmp_path / "fed", name="limits", sites=["a"])
    path = tmp_path / "policy.yaml"
    write(path, {"resources": {"task_time_limit_s": 50}}, 1)
    gov = build_governance(tmp_path / "state", fed.site_kits["a"], path)
    data = SiteDataConfig.model_validate({"datasets": {}})
    agent = SiteAgent(
        fed.site_kits["a"], data, state_dir=tmp_path / "state", time_limit=100.0,
        coordinator="127.0.0.1:1", governance=gov,
    )  # fmt: skip
    assert (agent.worker.time_limit, agent.worker.min_cell) == (50, 5)
    write(path, {"resources": {"task_time_limit_s": 500}, "min_cell": 11}, 2)
    agent._apply_policy()
    assert (agent.worker.time_limit, agent.worker.min_cell) == (100.0, 11)  # the CLI's cap holds
