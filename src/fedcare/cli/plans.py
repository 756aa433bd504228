"""What a steward reviews: the name, plan hash and summary of a study file or analytics spec.

``fedcare site plan`` prints them; ``fedcare site approve STUDY.yaml`` computes the same and
approves that hash, so a steward never types a hash they have not seen. For a study whose model
is a study package, the package is resolved as the coordinator resolves it at submission (a
signed archive verified against the site kit's federation CA and kept in the site's cache, or
a hash already there), and the review shows its signer, dependencies, files and a diff against
the last version approved here (:mod:`fedcare.site.package_review`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from fedcare.errors import ConfigError

__all__ = [
    "ReviewedPlan",
    "package_review",
    "plan_of_file",
    "plan_to_approve",
    "site_packages",
]

#: Makes the site's package cache (a :class:`fedcare.site.packages.SitePackages`) when needed.
Packages = Callable[[], Any]


class ReviewedPlan(NamedTuple):
    """A study's (or analytics job's) name, the plan hash its tasks carry, and a summary."""

    study: str
    hash: str
    summary: str
    #: The study package (``sha256:<hex>``) the plan runs, if its model is one.
    package: str | None = None


def plan_of_file(
    path: Path, dataset: str | None = None, packages: Packages | None = None
) -> ReviewedPlan:
    """The plan of the study file (or analytics spec, run on ``dataset``) at ``path``.

    A study whose model is a package needs ``packages`` (the site's cache), where the package
    is verified and kept; the plan is noted as running it.

    Raises
    ------
    FedcareError
        If the file is not a valid study file or analytics spec.
    """
    from fedcare.cli.analytics import analytics_plan_summary, is_analytics_file
    from fedcare.packages.resolve import is_package_model
    from fedcare.records.study import StudyConfig
    from fedcare.strategy.plan import plan_for_study, plan_summary

    if is_analytics_file(path):
        from fedcare.analytics.spec import AnalyticsSpec

        digest, summary = analytics_plan_summary(path, dataset)
        return ReviewedPlan(AnalyticsSpec.from_yaml(path).name, digest, summary)
    config = StudyConfig.from_yaml(path)
    package = None
    if is_package_model(config.model):
        if packages is None:
            raise ConfigError(f"{path}: its model is a study package; give the site's --state")
        from fedcare.site.package_review import resolve_for_review

        cache = packages()
        config = config.with_overrides(model=resolve_for_review(cache, config.model, path))
        package = str(config.model["package"])
    plan = plan_for_study(config)
    if package is not None:
        cache.remember_plan(plan.hash, package)
    return ReviewedPlan(config.name, plan.hash, plan_summary(plan), package)


def package_review(reviewed: ReviewedPlan, packages: Packages, state: Path, policy: Any) -> str:
    """The steward's review of the plan's package (empty if its model is no package)."""
    if reviewed.package is None:
        return ""
    from fedcare.site.approvals import ApprovalStore
    from fedcare.site.package_review import review_lines

    approvals = ApprovalStore.in_state_dir(state)
    return "\n".join(review_lines(packages(), approvals, reviewed.package, policy))


def plan_to_approve(
    path: Path | None,
    study: str | None,
    plan: str | None,
    dataset: str | None = None,
    packages: Packages | None = None,
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
    reviewed = plan_of_file(path, dataset, packages)
    for option, given, computed in (
        ("--study", study, reviewed.study),
        ("--plan", plan, reviewed.hash),
    ):
        if given is not None and given != computed:
            raise ConfigError(
                f"{option} {given} differs from what {path} gives ({computed}); nothing approved"
            )
    return reviewed.study, reviewed.hash, reviewed.summary


def site_packages(state: Path, kit_of: Callable[[], Path]) -> Packages:
    """Makes the site's package cache under ``state``, with the federation CA of the kit
    ``kit_of()`` names (asked only when a study's model is a package)."""

    def make() -> Any:
        from fedcare.site.packages import SitePackages

        return SitePackages.for_kit(state, kit_of())

    return make
