"""The site's re-check of the training plan a task carries.

The plan itself (content, canonical JSON, hash) is :mod:`fedcare.records.plan`. Before any
approval is looked up, the site checks that the plan is what it claims to be:

1. the plan parses (every key present, the right types) — ``plan-invalid``;
2. its declared ``plan_hash`` is the hash of its content — ``plan-hash-mismatch``;
3. its code and dependency part equals this installation's (fedcare version, SHA-256 of the
   model adapter files, numpy/scipy/scikit-learn/torch versions) — ``plan-code-mismatch``;
4. the task's training config (lr, epochs, ... in ``Task.config``) agrees with the plan's
   training recipe — ``plan-config-mismatch`` — so the coordinator cannot change the recipe
   under an approved hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.errors import ConfigError
from fedcare.records.messages import Task
from fedcare.records.plan import TrainingPlan

__all__ = [
    "RECIPE_KEYS",
    "PlanIdentity",
    "Refusal",
    "analytics_plan_hash",
    "check_task_plan",
    "identify_plan",
    "short_hash",
    "study_name",
]

#: Task config keys that belong to the training recipe (the rest: seed, split, algorithm, ...).
RECIPE_KEYS = ("epochs", "max_steps", "lr", "batch_size", "optimizer", "momentum", "l2")


@dataclass(frozen=True)
class Refusal:
    """Why the site does not run a task: a short kind and a message for the coordinator."""

    kind: str
    message: str


def short_hash(plan_hash: str) -> str:
    return f"{plan_hash[:12]}…"


def _diff(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(theirs) | set(ours))
    return [
        f"{k}: plan {theirs.get(k, '(none)')!r}, site {ours.get(k, '(none)')!r}"
        for k in keys
        if theirs.get(k) != ours.get(k)
    ]


def _check_recipe(task: Task, plan: TrainingPlan) -> Refusal | None:
    if task.kind != "fit":
        return None
    bad = [
        f"{k}={task.config[k]!r} (plan: {plan.training.get(k, '(not set)')!r})"
        for k in RECIPE_KEYS
        if k in task.config and task.config[k] != plan.training.get(k)
    ]
    if not bad:
        return None
    return Refusal(
        "plan-config-mismatch",
        f"task {task.task_id} changes the approved training recipe of plan "
        f"{short_hash(plan.hash)}: {', '.join(bad)}",
    )


def check_task_plan(task: Task) -> TrainingPlan | Refusal:
    """The task's plan when it is what it claims, else the :class:`Refusal`."""
    try:
        plan = TrainingPlan.from_task_plan(task.plan)
    except ConfigError as err:
        return Refusal("plan-invalid", f"task {task.task_id}: {err}")
    declared = str(task.plan.get("plan_hash", ""))
    if declared != plan.hash:
        return Refusal(
            "plan-hash-mismatch",
            f"task {task.task_id} declares plan {short_hash(declared)} but its content hashes "
            f"to {short_hash(plan.hash)}",
        )
    try:
        local = plan.with_local_code()
    except ConfigError as err:
        return Refusal("plan-invalid", f"task {task.task_id}: {err}")
    diffs = _diff(plan.code, local.code) + _diff(plan.dependencies, local.dependencies)
    if diffs:
        return Refusal(
            "plan-code-mismatch",
            f"plan {short_hash(plan.hash)} for study {plan.study!r} was built for other code "
            f"than this site runs: {'; '.join(diffs[:4])}"
            + (f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""),
        )
    return _check_recipe(task, plan) or plan


@dataclass(frozen=True)
class PlanIdentity:
    """What an approval is about: the study, the plan hash, a summary and the privacy mode."""

    study: str
    hash: str
    summary: str
    privacy_mode: str = "open"


def study_name(task: Task) -> str:
    """The study a task belongs to: the plan's name (an analytics spec's name for analytics)."""
    if task.kind == "analytics":
        spec = task.plan.get("analytics")
        return str(spec.get("name", "analytics")) if isinstance(spec, Mapping) else ""
    return str(task.plan.get("study", ""))


def analytics_plan_hash(plan: Mapping[str, Any]) -> str:
    """The hash of an analytics plan: its spec, columns and dataset (not the stage's
    ``only``/``thresholds``, which the coordinator derives round by round from the spec)."""
    content = {k: plan.get(k) for k in ("analytics", "columns", "dataset")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def identify_plan(task: Task) -> PlanIdentity | Refusal:
    """The checked identity of a task's plan (training plans: :func:`check_task_plan`)."""
    if task.kind == "analytics":
        if not isinstance(task.plan.get("analytics"), Mapping):
            return Refusal("plan-invalid", f"analytics task {task.task_id} carries no spec")
        summary = json.dumps(task.plan.get("analytics"), sort_keys=True, default=str)
        return PlanIdentity(study_name(task), analytics_plan_hash(task.plan), summary)
    checked = check_task_plan(task)
    if isinstance(checked, Refusal):
        return checked
    return PlanIdentity(checked.study, checked.hash, checked.summary(), checked.privacy_mode)
