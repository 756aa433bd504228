"""``fedcare site deployments|approve-deployment|refuse-deployment|models|retire-model``: the
steward's decisions on models the coordinator deploys, and the site's model store.

A deployment reaches the site as a pending decision in its approvals store (study
``deployment:<version>``, plan hash the bundle's hash; :mod:`fedcare.site.deployments`). The
steward approves or refuses it here (sealed with the kit's key and audited, as a plan's
decision); the running agent then says Hello again, the coordinator offers the deployment
again, and the site takes the model into ``STATE/models`` (or answers the refusal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.cli.common import echo_json
from fedcare.cli.options import JSON
from fedcare.errors import FedcareError, NotFoundError

__all__ = ["register"]

console = Console(emoji=False, stderr=True)
STATE = typer.Option(Path("site-state"), help="The site's state folder (as for `site start`).")
KIT = typer.Option(
    None, help="This site's startup kit (default: the one the agent recorded in STATE)."
)
NOTE = typer.Option("", help="A note kept with the decision (sent with a refusal).")


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _deployment_rows(state: Path, version: str | None = None) -> list[Any]:
    from fedcare.site.approvals import ApprovalStore
    from fedcare.site.deployments import DEPLOYMENT_STUDY_PREFIX, deployment_study

    rows = ApprovalStore.in_state_dir(state).list()
    if version is not None:
        return [r for r in rows if r.study == deployment_study(version)]
    return [r for r in rows if r.study.startswith(DEPLOYMENT_STUDY_PREFIX)]


def _hash_of(state: Path, version: str, bundle: str | None) -> str:
    """The bundle hash of ``version``'s deployment that reached this site."""
    rows = _deployment_rows(state, version)
    if not rows:
        raise NotFoundError(
            f"no deployment of model {version!r} has reached this site yet "
            "(`fedcare site deployments` lists those that did)"
        )
    if bundle is not None:
        if bundle not in {r.plan_hash for r in rows}:
            raise NotFoundError(f"no deployment of model {version!r} has bundle {bundle}")
        return bundle
    return str(rows[-1].plan_hash)


def site_deployments(state: Path = STATE, as_json: bool = JSON) -> None:
    """Models the coordinator deployed to this site, and the steward's decision on each."""
    try:
        rows = _deployment_rows(state)
    except FedcareError as err:
        raise _fail(err) from None
    entries = [
        {
            "version": r.study.split(":", 1)[1],
            "bundle_sha256": r.plan_hash,
            "status": r.status,
            "note": r.note,
            "summary": r.summary,
            "decided_at": r.decided_text(),
        }
        for r in rows
    ]
    if as_json:
        return echo_json(entries)
    table = Table("version", "status", "bundle", "decided (UTC)", "what")
    for e in entries:
        table.add_row(e["version"], e["status"], e["bundle_sha256"][:23], e["decided_at"][:19],
                      e["note"] or e["summary"])  # fmt: skip
    Console(emoji=False).print(table)


def site_approve_deployment(
    version: str = typer.Argument(..., help="The model version (`site deployments`)."),
    bundle: str | None = typer.Option(None, help="The bundle hash, if several reached the site."),
    note: str = NOTE,
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Approve a model deployed to this site: the agent takes it into the model store."""
    from fedcare.cli.governance import _steward
    from fedcare.site.deployments import deployment_study
    from fedcare.site.stewardship import default_until

    try:
        digest = _hash_of(state, version, bundle)
        row = _steward(state, kit).approve(deployment_study(version), digest, default_until(),
                                           note)  # fmt: skip
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"approved model {version} ({digest})", highlight=False, soft_wrap=True)
    typer.echo(row.approval_id)


def site_refuse_deployment(
    version: str = typer.Argument(..., help="The model version (`site deployments`)."),
    note: str = NOTE,
    bundle: str | None = typer.Option(None, help="The bundle hash, if several reached the site."),
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Refuse a model deployed to this site: the coordinator is told, with the note."""
    from fedcare.cli.governance import _steward
    from fedcare.site.deployments import deployment_study

    try:
        digest = _hash_of(state, version, bundle)
        row = _steward(state, kit).refuse(deployment_study(version), digest, note)
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"refused model {version} ({digest})", highlight=False, soft_wrap=True)
    typer.echo(row.approval_id)


def site_models(state: Path = STATE, as_json: bool = JSON) -> None:
    """The models this site keeps (its model store): version, hashes, when, who approved."""
    from fedcare.inference.store import ModelStore

    try:
        versions = ModelStore.in_state_dir(state).versions()
    except FedcareError as err:
        raise _fail(err) from None
    if as_json:
        return echo_json(versions)
    table = Table("version", "status", "bundle", "kept as", "taken (UTC)", "approved by")
    for version, e in sorted(versions.items()):
        table.add_row(version, str(e.get("status")), str(e.get("bundle_sha256"))[:23],
                      str(e.get("stored_sha256"))[:23], str(e.get("taken_at"))[:19],
                      str(e.get("approved_by")))  # fmt: skip
    Console(emoji=False).print(table)


def site_retire_model(
    version: str = typer.Argument(..., help="A version in the model store (`site models`)."),
    note: str = NOTE,
    state: Path = STATE,
    kit: Path | None = KIT,
) -> None:
    """Retire a model this site keeps: it stays in the store (and in its audit) but sends no
    more monitoring; the coordinator must deploy it again for the site to use it anew."""
    from fedcare.cli.governance import site_kit
    from fedcare.inference.store import ModelStore
    from fedcare.site.stewardship import login_name, open_site_audit

    try:
        entry = ModelStore.in_state_dir(state).retire(version)
        audit = open_site_audit(state, site_kit(state, kit))
        try:
            audit.append("model-retired", version=version, steward=login_name(), note=note,
                         bundle_sha256=entry.get("bundle_sha256"))  # fmt: skip
        finally:
            audit.close()
    except FedcareError as err:
        raise _fail(err) from None
    console.print(f"retired model {version}", highlight=False)


def register(site_app: typer.Typer) -> None:
    """Add the deployment decisions and the model store to ``fedcare site``."""
    site_app.command("deployments")(site_deployments)
    site_app.command("approve-deployment")(site_approve_deployment)
    site_app.command("refuse-deployment")(site_refuse_deployment)
    site_app.command("models")(site_models)
    site_app.command("retire-model")(site_retire_model)
