"""``fedcare models deploy VERSION --site A --site B`` and ``fedcare models deployments [VERSION]``:
send a registered model to sites (each site's steward decides) and see what each answered,
on the coordinator's host (``--home``) or from a desk (``--coordinator URL``: the HTTP API's
``/models/{version}/deploy`` and ``/deployments``).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.cli.common import _store, echo_json, fail
from fedcare.cli.options import CA, COORDINATOR, DB, HOME, JSON
from fedcare.cli.remote import ask_api, remote_client
from fedcare.errors import FedcareError

__all__ = ["print_deployments", "register"]

SITES = typer.Option(..., "--site", help="A site to send the model to (repeat for more).")


def print_deployments(rows: list[dict[str, Any]]) -> None:
    """The table of ``fedcare models deployments``."""
    table = Table("version", "site", "status", "reason", "kept as", "approved by", "monitoring")
    for r in rows:
        monitoring = r.get("monitoring") or {}
        predictions = (monitoring.get("predictions") or {}) if isinstance(monitoring, dict) else {}
        seen = ""
        if monitoring:
            alerts = len(monitoring.get("alerts") or [])
            seen = f"{predictions.get('n', '?')} predictions, {alerts} alert(s)"
        table.add_row(r["version"], r["site_id"], r["status"], r.get("reason") or "",
                      (r.get("stored_sha256") or "")[:23], r.get("approved_by") or "",
                      seen)  # fmt: skip
    Console(emoji=False).print(table)


def models_deploy(
    ctx: typer.Context,
    version: str,
    site: list[str] = SITES,
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Ask each --site to take model VERSION: its steward approves or refuses it, then the
    site verifies the signed bundle and keeps it (`fedcare site models`)."""
    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        rows = ask_api(client, lambda c: c.deploy(version, site))
    else:
        from fedcare.cli.users import _audit
        from fedcare.coordinator.deployments import deployment_rows, request_deployment

        try:
            with _store(home, db) as store:
                try:
                    audit = _audit(home, None)
                except FedcareError:
                    audit = None  # no kit recorded: the request is in the database only
                try:
                    infos = request_deployment(store, version, site, getpass.getuser(), audit=audit)
                finally:
                    if audit is not None:
                        audit.close()
                rows = deployment_rows(infos)
        except FedcareError as err:
            raise fail(err) from None
    if as_json:
        return echo_json(rows)
    print_deployments(rows)


def models_deployments(
    ctx: typer.Context,
    version: str | None = typer.Argument(None, help="Only this version's deployments."),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Deployments (of one version): each site's answer, and its latest monitoring summary."""
    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        if version is None:
            versions = [m["version"] for m in ask_api(client, lambda c: c.models())]
        else:
            versions = [version]
        rows = [r for v in versions for r in ask_api(client, lambda c, v=v: c.deployments(v))]
    else:
        from fedcare.coordinator.deployments import deployment_rows

        try:
            with _store(home, db) as store:
                if version is not None:
                    store.get_model(version)
                rows = deployment_rows(store.list_deployments(version))
        except FedcareError as err:
            raise fail(err) from None
    if as_json:
        return echo_json(rows)
    print_deployments(rows)


def register(models_app: typer.Typer) -> None:
    """Add ``deploy`` and ``deployments`` to ``fedcare models``."""
    models_app.command("deploy")(models_deploy)
    models_app.command("deployments")(models_deployments)
