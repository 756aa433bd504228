"""``fedcare site plan``: what a steward reviews before approving a study's plan.

The plan hash and summary (:mod:`fedcare.cli.plans`), and for a study package its signer,
dependencies, files and a diff against the last version approved at this site
(:mod:`fedcare.site.package_review`).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fedcare.cli.governance import KIT, STATE, console, site_kit
from fedcare.cli.governance import _fail as fail
from fedcare.errors import FedcareError

__all__ = ["site_plan"]


def site_plan(
    study: Path = typer.Argument(..., help="The study file, or an analytics spec."),
    dataset: str | None = typer.Option(
        None, help="Analytics: the dataset the job runs on (as `fedcare analytics --dataset`)."
    ),
    state: Path = STATE,
    kit: Path | None = KIT,
    policy: Path | None = typer.Option(None, help="The site's policy: is the signer trusted?"),
) -> None:
    """Print the hash to approve (and a summary) of a study's training plan or of an
    analytics spec; approve it with `fedcare site approve STUDY.yaml` (the same hash). For a
    study package: its signer, dependencies, files and a diff against the last version
    approved at this site."""
    from fedcare.cli.plans import package_review, plan_of_file, site_packages
    from fedcare.site.policy import SitePolicy

    packages = site_packages(state, lambda: site_kit(state, kit))
    try:
        reviewed = plan_of_file(study, dataset, packages)
        review = package_review(
            reviewed, packages, state, SitePolicy.from_yaml(policy) if policy else None
        )
    except FedcareError as err:
        raise fail(err) from None
    typer.echo(reviewed.hash)
    console.print(reviewed.summary, highlight=False, markup=False)
    if review:
        Console(emoji=False, stderr=True, soft_wrap=True).print(
            review, highlight=False, markup=False
        )
