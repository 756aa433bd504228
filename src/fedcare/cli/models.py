"""``fedcare models list|show|export``: the coordinator's model registry (on its host)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedcare.cli.common import _store, fail
from fedcare.cli.options import DB, HOME
from fedcare.errors import FedcareError

__all__ = ["models_app"]

models_app = typer.Typer(help="Registered models: versions, cards, lineage, export.")


def _short(digest: str | None) -> str:
    return "" if not digest else digest.removeprefix("sha256:")[:16]


@models_app.command("list")
def models_list(
    study: str | None = typer.Option(None, help="Only the models of this study id."),
    home: Path = HOME,
    db: str | None = DB,
) -> None:
    """Registered model versions, oldest first."""
    try:
        with _store(home, db) as store:
            models = store.list_models(study)
    except FedcareError as err:
        raise fail(err) from None
    table = Table()
    for column in ("version", "study", "round", "model hash", "parent", "sites", "created (UTC)"):
        table.add_column(column, no_wrap=column in ("version", "parent", "model hash"))
    for m in models:
        table.add_row(
            m.version,
            m.study_id,
            str(m.round),
            _short(m.model_hash),
            m.parent or "",
            str(len(m.card.get("sites", {}))),
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console().print(table)


@models_app.command("show")
def models_show(
    version: str,
    as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
    home: Path = HOME,
    db: str | None = DB,
) -> None:
    """A version's lineage and its model card."""
    try:
        with _store(home, db) as store:
            chain = store.lineage(version)
    except FedcareError as err:
        raise fail(err) from None
    card = chain[0].card
    if as_json:
        typer.echo(json.dumps(card, indent=2, sort_keys=True))
        return
    out = Console()
    out.print(f"version {version}: study {chain[0].study_id}, model {chain[0].model_hash}")
    out.print("lineage: " + " <- ".join(m.version for m in chain))
    privacy = card.get("privacy", {})
    out.print(f"privacy mode: {privacy.get('mode')}; plan hash: {card.get('plan_hash')}")
    table = Table("site", "dataset fingerprint(s)", "train rows", "approval(s)", "rounds", "ε")
    for site, entry in card.get("sites", {}).items():
        table.add_row(
            site,
            "\n".join(entry.get("dataset_fingerprints", [])),
            ", ".join(map(str, entry.get("num_rows", []))),
            ", ".join(entry.get("approval_ids", [])) or "–",
            str(len(entry.get("rounds", []))),
            str(privacy.get("epsilon_spent", {}).get(site)),
        )
    out.print(table)


@models_app.command("export")
def models_export(
    version: str,
    out: Path = typer.Option(..., "--out", help="Folder for model_card.json and params.npz."),
    home: Path = HOME,
    db: str | None = DB,
) -> None:
    """Write a version's card (model_card.json), lineage and parameters (params.npz)."""
    from fedcare.coordinator.registry_view import export_files

    try:
        with _store(home, db) as store:
            files = export_files(store, version)
    except FedcareError as err:
        raise fail(err) from None
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    card_path = out / "model_card.json"
    Console(stderr=True).print(f"card:   {card_path}\nparams: {out / 'params.npz'}")
