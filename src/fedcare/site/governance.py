"""The governed runtime step of a site agent: the mods in order, then the task, watched.

:class:`SiteGovernance` holds what the agent enforces (policy or the watched policy file, the
steward's approvals, the privacy ledger, the audit log) and builds the middleware of
:mod:`fedcare.site.mods`; :meth:`SiteGovernance.execute` runs an accepted task with
:func:`run_watched`, which polls the task's approval and stops the run when the steward
revokes it (or it expires) mid-task. The approval is checked against the identity the
approval mod accepted, not against the task as later mods tightened it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler, Mod
from fedcare.site.approvals import ApprovalStore
from fedcare.site.ledger import SiteLedger
from fedcare.site.mods import (
    WITHDRAWN,
    AuditSink,
    approval_mod,
    audit_mod,
    budget_mod,
    cohort_floor_mod,
    policy_mod,
    refuse_task,
    task_fields,
)
from fedcare.site.packages import SitePackages, package_mod
from fedcare.site.plans import PlanIdentity, Refusal, identify_plan
from fedcare.site.policy import SitePolicy
from fedcare.site.policy_watch import PolicyFile, policy_file_mod

__all__ = ["SiteGovernance", "run_watched"]


def run_watched(
    task: Task,
    run: Handler,
    *,
    stop: Callable[[], None],
    check: Callable[[], Refusal | None],
    poll_s: float = 0.5,
) -> Reply:
    """``run(task)`` in a thread; every ``poll_s`` ask ``check``, and on a refusal ``stop``
    the run and reply with that refusal (the site withdrew mid-task)."""
    result: list[Reply] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            result.append(run(task))
        except BaseException as err:  # handed to the caller's thread
            failed.append(err)

    thread = threading.Thread(target=target, name=f"task-{task.task_id}", daemon=True)
    thread.start()
    while True:
        thread.join(poll_s)
        if not thread.is_alive():
            break
        refusal = check()
        if refusal is not None:
            stop()
            thread.join(10.0)
            return Reply.failure(
                task, refusal.kind, f"{refusal.message}; the running task was stopped"
            )
    if failed:
        raise failed[0]
    return result[0]


@dataclass(frozen=True)
class SiteGovernance:
    """What the agent enforces: the policy, the steward's approvals, and where to audit."""

    policy: SitePolicy
    approvals: ApprovalStore
    audit: AuditSink
    approve_all: bool = False
    poll_s: float = 0.5
    #: The site's privacy ledger; None: DP tasks run unaccounted at the site (tests only).
    ledger: SiteLedger | None = None

    #: The policy file, re-read when it changes (:mod:`fedcare.site.policy_watch`); None:
    #: ``policy`` holds for the agent's life.
    policy_file: PolicyFile | None = None
    #: Anchors the audit head at the coordinator (:mod:`fedcare.site.anchoring`); None: never.
    anchors: Any = None
    #: The site's study packages (:mod:`fedcare.site.packages`); None: a task whose model is
    #: a package is refused (package-unavailable).
    packages: SitePackages | None = None
    #: Task id -> the plan identity its approval was granted for, while the task runs.
    _accepted: dict[str, PlanIdentity] = field(default_factory=dict, repr=False)

    def mods(self, row_counts: Mapping[str, int]) -> Sequence[Mod]:
        """The middleware, outermost first."""
        if self.policy_file is None:
            return (audit_mod(self.audit), *self._policy_mods(self.policy, row_counts))
        return (
            audit_mod(self.audit),
            policy_file_mod(
                self.policy_file,
                lambda policy: self._policy_mods(policy, row_counts),
                lambda task, kind, message: refuse_task(self.audit, task, Refusal(kind, message)),
            ),
        )

    def _policy_mods(self, policy: SitePolicy, row_counts: Mapping[str, int]) -> Sequence[Mod]:
        """The mods that depend on the policy (built again when the policy file changes)."""
        budget = (
            ()
            if self.ledger is None
            else (budget_mod(self.ledger, policy, row_counts, self.audit),)
        )
        return (
            policy_mod(policy, row_counts, self.audit),
            package_mod(self.packages, policy, self.audit),
            approval_mod(
                self.approvals, self.audit, approve_all=self.approve_all, accepted=self._accepted
            ),
            *budget,
            cohort_floor_mod(policy),
        )

    def still_allowed(self, task: Task) -> Refusal | None:
        """None while the task's approval holds; the refusal once revoked or expired."""
        if self.approve_all:
            return None
        plan = self._accepted.get(task.task_id) or identify_plan(task)
        if isinstance(plan, Refusal):
            return plan
        answer = self.approvals.check(plan.study, plan.hash)
        return None if answer.ok else Refusal(answer.kind, answer.message)

    def execute(self, task: Task, run: Handler, stop: Callable[[], None]) -> Reply:
        """The runtime step: audit that the task runs on data, run it, stop it on revocation."""
        self.audit.append("task-executed", **task_fields(task))
        reply = run_watched(
            task, run, stop=stop, check=lambda: self.still_allowed(task), poll_s=self.poll_s
        )
        if reply.error is not None and reply.error.kind in WITHDRAWN:
            self.audit.append(
                "task-stopped",
                task_id=task.task_id,
                reason_kind=reply.error.kind,
                plan_hash=str(task.plan.get("plan_hash", "")),
            )
        return reply
