"""The site's re-check of the training plan a task carries.

The plan itself (content, canonical JSON, hash) is :mod:`fedcare.records.plan`. Before any
approval is looked up, the site checks that the plan is what it claims to be:

1. the plan parses (every key present, the right types) — ``plan-invalid``;
2. its declared ``plan_hash`` is the hash of its content — ``plan-hash-mismatch``;
3. its code and dependency part equals this installation's (fedcare version, SHA-256 of the
   model adapter files, numpy/scipy/scikit-learn/torch versions) — ``plan-code-mismatch``;
4. its ``site_half`` is what its privacy mode composes — ``plan-invalid`` — so a plan
   cannot claim ``secure`` while masking nothing;
5. a ``fit`` task's pipeline is exactly the one the site derives from the plan
   (:func:`fedcare.strategy.site_half.site_pipeline_for`) — ``plan-pipeline-mismatch`` — so
   the coordinator cannot strip or weaken the clip, noise, mask or encryption the steward
   approved; the task passed on carries the derived pipeline;
6. the task's config is the plan's: a ``fit`` task's config, without the per-task keys (seed,
   secure-aggregation stage fields), equals the plan's ``training`` (recipe, local algorithm,
   ``prox_mu``, DP-SGD settings); an ``evaluate`` or ``stats`` task carries nothing but its
   seed (no ``split``: a site evaluates on its test rows only) — ``plan-config-mismatch``;
7. a secure-aggregation round's setup (``advertise`` stage) gives the site at least the
   neighbours and the share threshold the plan's ``secagg`` entry fixes
   (:mod:`fedcare.secure.secagg.setup_check`) — ``plan-pipeline-mismatch``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.errors import ConfigError, ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task
from fedcare.records.plan import TrainingPlan
from fedcare.secure.secagg.messages import ServerMessage
from fedcare.secure.secagg.setup_check import setup_refusal
from fedcare.strategy.plan import plan_summary
from fedcare.strategy.site_half import (
    HE_KEY,
    PER_TASK_KEYS,
    SECAGG_KEY,
    check_site_half,
    pipeline_differences,
    site_pipeline_for,
)

__all__ = [
    "PlanIdentity",
    "Refusal",
    "analytics_plan_hash",
    "check_task_plan",
    "expected_pipeline",
    "identify_plan",
    "study_name",
]

#: Task kinds whose config is checked against the plan (``secagg`` tasks carry protocol
#: messages only; analytics tasks have their own plan).
_CONFIGURED_KINDS = ("fit", "evaluate", "stats")


@dataclass(frozen=True)
class Refusal:
    """Why the site does not run a task: a short kind and a message for the coordinator."""

    kind: str
    message: str


def _diff(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(theirs) | set(ours))
    return [
        f"{k}: plan {theirs.get(k, '(none)')!r}, site {ours.get(k, '(none)')!r}"
        for k in keys
        if theirs.get(k) != ours.get(k)
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _config_change(key: str, given: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    if key not in given:
        return f"{key} missing (plan: {expected[key]!r})"
    if key not in expected:
        return f"{key}={given[key]!r} (plan: not set)"
    return f"{key}={given[key]!r} (plan: {expected[key]!r})"


def _check_config(task: Task, plan: TrainingPlan) -> Refusal | None:
    if task.kind not in _CONFIGURED_KINDS:
        return None
    expected = dict(plan.training) if task.kind == "fit" else {}
    given = {k: v for k, v in task.config.items() if k not in PER_TASK_KEYS}
    bad = [
        _config_change(k, given, expected)
        for k in sorted(set(given) | set(expected))
        if not (k in given and k in expected and _same(given[k], expected[k]))
    ]
    if not bad:
        return None
    return Refusal(
        "plan-config-mismatch",
        f"{task.kind} task {task.task_id} changes what plan {plan.hash} approved: {', '.join(bad)}",
    )


def expected_pipeline(task: Task, plan: TrainingPlan) -> dict[str, Any]:
    """The pipeline the site derives for ``task`` from its (checked) ``plan``.

    Only the federation key's fingerprint comes from the task (the site's HE layer checks it
    against its own key); every other value is the plan's. Non-``fit`` tasks get none.
    """
    if task.kind != "fit":
        return {}
    he = task.pipeline.get(HE_KEY)
    fingerprint = he.get("fingerprint") if isinstance(he, Mapping) else None
    return site_pipeline_for(plan, he_fingerprint=fingerprint)


def _check_pipeline(task: Task, plan: TrainingPlan) -> Refusal | None:
    if task.kind == "secagg" and not any(plan.site_half.get(k) for k in (SECAGG_KEY, HE_KEY)):
        return Refusal(
            "plan-pipeline-mismatch",
            f"secure-aggregation task {task.task_id}: plan {plan.hash} (privacy "
            f"mode {plan.privacy_mode!r}) has no secure aggregation or encryption layer",
        )
    if task.kind == "secagg" and isinstance(plan.site_half.get(SECAGG_KEY), Mapping):
        return _check_secagg_setup(task, plan)
    if task.kind != "fit":
        return None
    diffs = pipeline_differences(expected_pipeline(task, plan), task.pipeline)
    if not diffs:
        return None
    return Refusal(
        "plan-pipeline-mismatch",
        f"fit task {task.task_id} does not carry the site pipeline that plan "
        f"{plan.hash} (privacy mode {plan.privacy_mode!r}) requires: "
        f"{'; '.join(diffs)}",
    )


def _check_secagg_setup(task: Task, plan: TrainingPlan) -> Refusal | None:
    """An ``advertise`` stage's setup no weaker than the plan's secagg entry fixes."""
    try:
        message = ServerMessage.from_task(task.config, task.arrays.get("secagg", ArrayRecord()))
    except ValidationError as err:
        return Refusal("plan-pipeline-mismatch", f"secure-aggregation task {task.task_id}: {err}")
    if message.stage != "advertise":
        return None
    why = setup_refusal(message.header, plan.site_half[SECAGG_KEY])
    if why is None:
        return None
    return Refusal(
        "plan-pipeline-mismatch",
        f"secure-aggregation task {task.task_id} is weaker than plan {plan.hash} approved: {why}",
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
            f"task {task.task_id} declares plan {declared} but its content hashes to {plan.hash}",
        )
    try:
        local = plan.with_local_code()
    except ConfigError as err:
        return Refusal("plan-invalid", f"task {task.task_id}: {err}")
    diffs = _diff(plan.code, local.code) + _diff(plan.dependencies, local.dependencies)
    if diffs:
        return Refusal(
            "plan-code-mismatch",
            f"plan {plan.hash} for study {plan.study!r} was built for other code "
            f"than this site runs: {'; '.join(diffs[:4])}"
            + (f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""),
        )
    try:
        check_site_half(plan.privacy_mode, plan.site_half)
        expected_pipeline(task, plan)
    except ConfigError as err:
        return Refusal("plan-invalid", f"plan {plan.hash}: {err}")
    return _check_pipeline(task, plan) or _check_config(task, plan) or plan


@dataclass(frozen=True)
class PlanIdentity:
    """What an approval is about: the study, the plan hash, a summary and the privacy mode.

    ``pipeline``: for a training task, the site pipeline derived from the plan (what the
    site's layers apply; ``None`` for analytics tasks).
    """

    study: str
    hash: str
    summary: str
    privacy_mode: str = "open"
    pipeline: Mapping[str, Any] | None = None


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
    return PlanIdentity(
        checked.study,
        checked.hash,
        plan_summary(checked),
        checked.privacy_mode,
        expected_pipeline(task, checked),
    )
