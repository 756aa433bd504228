"""What a steward reviews: the name, plan hash and summary of a study file or analytics spec.

``fedcare site plan`` prints them; ``fedcare site approve STUDY.yaml`` computes the same and
approves that hash, so a steward never types a hash they have not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from fedcare.errors import ConfigError

__all__ = ["ReviewedPlan", "plan_of_file", "plan_to_approve"]


class ReviewedPlan(NamedTuple):
    """A study's (or analytics job's) name, the plan hash its tasks carry, and a summary."""

    study: str
    hash: str
    summary: str


def plan_of_file(path: Path, dataset: str | None = None) -> ReviewedPlan:
    """The plan of the study file (or analytics spec, run on ``dataset``) at ``path``.

    Raises
    ------
    FedcareError
        If the file is not a valid study file or analytics spec.
    """
    from fedcare.cli.analytics import analytics_plan_summary, is_analytics_file
    from fedcare.records.study import StudyConfig
    from fedcare.strategy.plan import plan_for_study, plan_summary

    if is_analytics_file(path):
        from fedcare.analytics.spec import AnalyticsSpec

        digest, summary = analytics_plan_summary(path, dataset)
        return ReviewedPlan(AnalyticsSpec.from_yaml(path).name, digest, summary)
    config = StudyConfig.from_yaml(path)
    plan = plan_for_study(config)
    return ReviewedPlan(config.name, plan.hash, plan_summary(plan))


def plan_to_approve(
    path: Path | None, study: str | None, plan: str | None, dataset: str | None = None
) -> tuple[str, str, str]:
    """(study, plan hash, summary) to approve: from the study file at ``path`` (``study`` and
    ``plan``, when given too, must agree with it), or from ``study`` and ``plan`` (summary "").

    Raises
    ------
    ConfigError
        If neither a file nor both ``study`` and ``plan`` are given, or a given one differs
        from what the file gives (naming both).
    """
    if path is None:
        if study is None or plan is None:
            raise ConfigError(
                "give the study file (fedcare site approve STUDY.yaml), or both --study and --plan"
            )
        return study, plan, ""
    reviewed = plan_of_file(path, dataset)
    for option, given, computed in (
        ("--study", study, reviewed.study),
        ("--plan", plan, reviewed.hash),
    ):
        if given is not None and given != computed:
            raise ConfigError(
                f"{option} {given} differs from what {path} gives ({computed}); nothing approved"
            )
    return reviewed.study, reviewed.hash, reviewed.summary
