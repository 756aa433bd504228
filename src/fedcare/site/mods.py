"""Site governance as middleware: audit, policy, plan approval, in a fixed order.

Mods are plain callables ``mod(task, next_handler) -> Reply`` (:mod:`fedcare.site.app`). The
agent runs them in its own process, before a task reaches the worker that holds the data, so a
refusal never touches data::

    audit_mod -> policy_mod -> package_mod -> approval_mod -> budget_mod -> cohort_floor_mod
    received     refuse?      fetch, verify   refuse?/decision  refuse?/spend
      -> worker (executed)
    reply-sent <------------------------------------------------------------- reply

Analytics tasks carry an analytics spec instead of a training plan; their approval is of the
spec's hash (:func:`fedcare.site.plans.analytics_plan_hash`) under the spec's name, and the
policy's ``min_cohort`` raises their ``min_cell`` after the approval.

A refusal is ``Reply.failure(task, kind, reason)`` with a kind such as
``policy-study-not-allowed``, ``policy-privacy-mode``, ``plan-not-approved``,
``approval-expired``, ``approval-revoked``, ``approval-invalid`` (a row not sealed by the
steward), ``approvals-unreadable``, ``policy-invalid`` (the re-read policy file is invalid),
``plan-refused``, ``plan-code-mismatch``, ``plan-pipeline-mismatch`` (a ``fit`` task without
the clip, noise, mask or encryption its approved plan requires), ``plan-config-mismatch`` (a
config the plan does not fix), ``package-unavailable``, ``package-invalid``,
``package-signer-untrusted``, ``package-dependencies`` (:mod:`fedcare.site.packages`) or
``privacy-budget-exceeded`` (:func:`budget_mod`, the site's
ledger) and a message a coordinator operator can act on; every decision goes to the site's
audit log.
:class:`fedcare.site.governance.SiteGovernance` assembles these mods and runs the accepted task
while polling its approval, stopping it when the steward revokes (or the approval expires).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

from fedcare.errors import FedcareError
from fedcare.records.invalid_rows import InvalidRows
from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler, Mod
from fedcare.site.approvals import ApprovalStore
from fedcare.site.ledger import SiteLedger, task_events
from fedcare.site.plans import PlanIdentity, Refusal, identify_plan, study_name
from fedcare.site.policy import OUTPUT_OF_KIND, SitePolicy, mode_satisfies
from fedcare.transport.framed import frame_reply

__all__ = [
    "WITHDRAWN",
    "AuditSink",
    "approval_mod",
    "audit_mod",
    "budget_mod",
    "chain",
    "cohort_floor_mod",
    "policy_mod",
    "refuse_task",
    "task_fields",
]

APPROVE_ALL_ID = "approve-all"
#: Refusal kinds that can stop a running task (the approval went away while it ran).
WITHDRAWN = frozenset({"approval-revoked", "approval-expired", "plan-refused", "plan-not-approved"})


class AuditSink(Protocol):
    """Where governance writes its entries (``fedcare.audit.AuditLog`` in the agent)."""

    def append(self, event: str, /, **data: Any) -> object: ...


def chain(mods: Sequence[Mod], handler: Handler) -> Handler:
    """``handler`` wrapped in ``mods`` (the first one outermost)."""
    for mod in reversed(mods):
        handler = _wrap(mod, handler)
    return handler


def _wrap(mod: Mod, inner: Handler) -> Handler:
    return lambda task: mod(task, inner)


def task_fields(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "study_id": task.study_id,
        "study": str(task.plan.get("study", "")),
        "round": task.round,
        "kind": task.kind,
        "dataset": str(task.plan.get("dataset", "")),
        "plan_hash": str(task.plan.get("plan_hash", "")),
    }


def refuse_task(audit: AuditSink, task: Task, refusal: Refusal) -> Reply:
    audit.append(
        "decision",
        task_id=task.task_id,
        outcome="refused",
        reason_kind=refusal.kind,
        reason=refusal.message,
    )
    return Reply.failure(task, refusal.kind, refusal.message)


def audit_mod(audit: AuditSink) -> Mod:
    """Log every task received and every reply sent (kind, size and SHA-256 of its framed
    payload, :mod:`fedcare.transport.framed`, computed over views of its arrays; the
    step a resumed training started from), and the invalid rows a task left out
    (``rows-skipped``) or failed on (``rows-invalid``), by reason (counts only;
    :mod:`fedcare.site.row_skips`)."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        audit.append("task-received", **task_fields(task))
        reply = next_handler(task)
        counts = reply.info.get("invalid_rows")
        if counts:
            invalid = InvalidRows.from_info(counts)
            event = "rows-skipped" if invalid.skipped else "rows-invalid"
            audit.append(event, task_id=task.task_id, dataset=task_fields(task)["dataset"],
                         **invalid.to_dict())  # fmt: skip
        framed = frame_reply(reply)  # what protocol 1.2 sends; views of the arrays, no copy
        audit.append(
            "reply-sent",
            task_id=task.task_id,
            kind=reply.kind,
            ok=reply.ok,
            error_kind=None if reply.error is None else reply.error.kind,
            size_bytes=framed.size,
            sha256=framed.sha256(),
            num_samples=reply.num_samples,
            dataset_fingerprint=reply.info.get("dataset_fingerprint"),
            num_rows=reply.info.get("num_rows"),
            plan_hash=reply.info.get("plan_hash"),
            approval_id=reply.info.get("approval_id"),
            isolation=reply.info.get("isolation"),  # the worker's sandbox, when it has one
            package_isolation=reply.info.get("package_isolation"),  # a study package's runner
            **_resumed(reply),
        )
        return reply

    return mod


def _resumed(reply: Reply) -> dict[str, str]:
    """A fit reply's step its training resumed from after a restart (site/train_checkpoint)."""
    step = reply.info.get("resumed_from_step")
    return {} if step is None else {"resumed_from_step": step}


def policy_refusal(policy: SitePolicy, task: Task, row_counts: Mapping[str, int]) -> Refusal | None:
    """The first rule of ``policy`` that ``task`` breaks, or None."""
    return _study_refusal(policy, task) or _task_refusal(policy, task, row_counts)


def _study_refusal(policy: SitePolicy, task: Task) -> Refusal | None:
    """Rules on the study as a whole: its name, privacy mode and declared epsilon."""
    plan = task.plan
    study = study_name(task)
    mode = str(plan.get("privacy_mode", "open"))
    dataset = str(plan.get("dataset", ""))
    if not policy.allows_study(study):
        allowed = ", ".join(policy.allowed_studies or ()) or "none"
        return Refusal(
            "policy-study-not-allowed",
            f"study {study!r} is not in this site's policy (allowed studies: {allowed})",
        )
    if not mode_satisfies(mode, policy.min_privacy_mode):
        return Refusal(
            "policy-privacy-mode",
            f"study {study!r} runs in privacy mode {mode!r}; this site's policy accepts "
            f"{policy.min_privacy_mode!r} or a mode that guarantees at least as much",
        )
    cap, epsilon = policy.epsilon_cap.get(dataset), plan.get("epsilon")
    if cap is not None and isinstance(epsilon, int | float) and epsilon > cap:
        return Refusal(
            "policy-epsilon-cap",
            f"study {study!r} declares epsilon {epsilon:g} on dataset {dataset!r}; "
            f"this site caps it at {cap:g}",
        )
    return None


def _task_refusal(policy: SitePolicy, task: Task, row_counts: Mapping[str, int]) -> Refusal | None:
    """Rules on this task: what it sends back, its round, the size of the cohort it uses."""
    plan = task.plan
    study, dataset = study_name(task), str(plan.get("dataset", ""))
    output = OUTPUT_OF_KIND.get(task.kind, task.kind)
    if output not in policy.allowed_outputs:
        return Refusal(
            "policy-output-not-allowed",
            f"a {task.kind!r} task sends back {output}; this site's policy allows only "
            f"{', '.join(policy.allowed_outputs) or 'nothing'}",
        )
    validation = plan.get("validation")
    if (
        isinstance(validation, Mapping)
        and validation.get("report")
        and "validation" not in policy.allowed_outputs
    ):
        return Refusal(
            "policy-output-not-allowed",
            f"study {study!r} asks each site for a clinical validation summary of its final "
            "model (its validation section); this site's policy allows only "
            f"{', '.join(policy.allowed_outputs) or 'nothing'}",
        )
    rounds = plan.get("rounds")
    if policy.max_rounds is not None and (
        task.round > policy.max_rounds or (isinstance(rounds, int) and rounds > policy.max_rounds)
    ):
        return Refusal(
            "policy-max-rounds",
            f"study {study!r} asks for {rounds} rounds (task round {task.round}); "
            f"this site's policy allows at most {policy.max_rounds}",
        )
    rows = row_counts.get(dataset)
    if rows is not None and rows < policy.min_cohort:
        return Refusal(
            "policy-min-cohort",
            f"dataset {dataset!r} has {rows} rows at this site, fewer than the policy's "
            f"minimum cohort of {policy.min_cohort}",
        )
    return None


def policy_mod(policy: SitePolicy, row_counts: Mapping[str, int], audit: AuditSink) -> Mod:
    """Refuse tasks the site's policy forbids."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        refusal = policy_refusal(policy, task, row_counts)
        if refusal is not None:
            return refuse_task(audit, task, refusal)
        return next_handler(task)

    return mod


def _at_least(value: object, floor: int) -> int:
    return max(int(value) if isinstance(value, int | float) else 0, floor)


def cohort_floor_mod(policy: SitePolicy) -> Mod:
    """Raise an analytics task's ``min_cell`` (its config and its spec) to the policy's
    ``min_cohort``. It runs after the approval, which is of the spec the steward saw."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        if task.kind != "analytics" or not policy.min_cohort:
            return next_handler(task)
        floor = policy.min_cohort
        config = {**task.config, "min_cell": _at_least(task.config.get("min_cell"), floor)}
        plan = dict(task.plan)
        spec = plan.get("analytics")
        if isinstance(spec, Mapping):
            plan["analytics"] = {**spec, "min_cell": _at_least(spec.get("min_cell"), floor)}
        return next_handler(replace(task, config=config, plan=plan))

    return mod


def _now() -> datetime:
    return datetime.now(timezone.utc)


def approval_mod(
    approvals: ApprovalStore,
    audit: AuditSink,
    *,
    approve_all: bool = False,
    clock: Callable[[], datetime] = _now,
    accepted: dict[str, PlanIdentity] | None = None,
) -> Mod:
    """Run only plans that check out and that the steward approved for the study, unexpired.

    ``accepted`` (task id -> the approved identity) holds each task's identity while it runs,
    so a later mod that tightens the task (:func:`cohort_floor_mod`) does not change what the
    running task's approval is checked against.
    """

    def mod(task: Task, next_handler: Handler) -> Reply:
        checked = identify_plan(task)
        if isinstance(checked, Refusal):
            return refuse_task(audit, task, checked)
        plan = checked
        if approve_all:
            approval_id = APPROVE_ALL_ID
        else:
            answer = approvals.check(plan.study, plan.hash, clock())
            if not answer.ok:
                if answer.kind == "plan-not-approved":
                    approvals.record_pending(plan.study, plan.hash, plan.summary)
                return refuse_task(audit, task, Refusal(answer.kind, answer.message))
            assert answer.approval is not None
            approval_id = answer.approval.approval_id
        audit.append(
            "decision",
            task_id=task.task_id,
            outcome="accepted",
            plan_hash=plan.hash,
            approval_id=approval_id,
            privacy_mode=plan.privacy_mode,
            # what a DP task spends is audited by budget_mod ("privacy-spend"), which runs next
            epsilon_spent=0.0 if plan.privacy_mode == "open" else None,
        )
        if plan.pipeline is not None:  # the site's layers apply what the plan requires
            task = replace(task, pipeline=plan.pipeline)
        if accepted is not None:
            accepted[task.task_id] = plan
        try:
            reply = next_handler(task)
        finally:
            if accepted is not None:
                accepted.pop(task.task_id, None)
        return replace(
            reply, info={**reply.info, "plan_hash": plan.hash, "approval_id": approval_id}
        )

    return mod


def budget_mod(
    ledger: SiteLedger, policy: SitePolicy, row_counts: Mapping[str, int], audit: AuditSink
) -> Mod:
    """Refuse a ``fit`` task that would bring a dataset's epsilon above the policy's cap;
    otherwise record its spend in the site's ledger (before training; once per study, round
    and dataset) and audit epsilon spent and remaining."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        dataset = str(task.plan.get("dataset", ""))
        try:
            events = task_events(task, row_counts.get(dataset))
        except FedcareError as err:  # cannot account it: it does not run
            return refuse_task(audit, task, Refusal("privacy-budget-unaccountable", str(err)))
        if not events:
            return next_handler(task)
        decision = ledger.spend(
            dataset,
            study_id=task.study_id,
            study=study_name(task),
            round=task.round,
            events=events,
            cap=policy.epsilon_cap.get(dataset),
        )
        if not decision.ok:
            return refuse_task(audit, task, Refusal("privacy-budget-exceeded", decision.reason()))
        audit.append(
            "privacy-spend",
            task_id=task.task_id,
            dataset=dataset,
            round=task.round,
            events=[e.to_dict() for e in events],
            epsilon_spent=decision.after,
            epsilon_remaining=decision.remaining,
            already_recorded=decision.already,
        )
        reply = next_handler(task)
        return replace(reply, info={**reply.info, "epsilon_spent": f"{decision.after:.12g}"})

    return mod
