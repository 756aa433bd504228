"""``fedcare models list|show|export``: the coordinator's model registry, on its host or from a
desk (``--coordinator URL``: the HTTP API's ``/models`` routes; see :mod:`fedcare.cli.remote`).

Both modes print the same lines from the same data (the API's shapes, which ``--json`` prints);
a remote export downloads the API's zip and unpacks the files ``models export`` writes.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.cli.common import _store, echo_json, fail
from fedcare.cli.options import CA, COORDINATOR, DB, HOME, JSON
from fedcare.cli.remote import ask_api, remote_client
from fedcare.errors import FedcareError

__all__ = ["models_app", "print_model", "print_models", "unpack_export"]

models_app = typer.Typer(
    help="Registered models: versions, cards, lineage, export (remotely with --coordinator)."
)


def _short(digest: str | None) -> str:
    return "" if not digest else digest.removeprefix("sha256:")[:16]


def print_models(briefs: list[dict[str, Any]]) -> None:
    """The table of ``fedcare models list`` from the briefs of ``GET /models``."""
    table = Table()
    for column in ("version", "study", "round", "model hash", "parent", "sites", "created (UTC)"):
        table.add_column(column, no_wrap=column in ("version", "parent", "model hash"))
    for m in briefs:
        created = datetime.fromisoformat(m["created_at"]) if m.get("created_at") else None
        table.add_row(
            m["version"],
            m["study_id"],
            str(m["round"]),
            _short(m["model_hash"]),
            m["parent"] or "",
            str(m["sites"]),
            created.strftime("%Y-%m-%d %H:%M:%S") if created else "",
        )
    Console(emoji=False).print(table)


def print_model(model: dict[str, Any], chain: list[str], card: dict[str, Any]) -> None:
    """What ``fedcare models show`` prints: the model's brief, its lineage (``chain``: its
    version, then its ancestors' parent first) and its card."""
    out = Console(emoji=False)
    out.print(f"version {model['version']}: study {model['study_id']}, model {model['model_hash']}")
    out.print("lineage: " + " <- ".join(chain))
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


def unpack_export(archive: Path, out: Path) -> list[Path]:
    """Write the files of a downloaded export zip into ``out``; returns their paths.

    Raises
    ------
    FedcareError
        Not a zip archive, or a member that is not a plain file name (a folder part, an
        absolute path, ``..``): nothing is written then.
    """
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            bad = [n for n in names if Path(n).name != n or n in ("", ".", "..") or "\\" in n]
            if bad:
                raise FedcareError(
                    f"the downloaded archive names files outside the output folder ({bad[0]!r}): "
                    "refused, nothing written"
                )
            contents = {name: zf.read(name) for name in names}
    except zipfile.BadZipFile as err:
        raise FedcareError(f"the download is not a zip archive: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (out / name).write_bytes(data)
    return [out / name for name in contents]


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    study: str | None = typer.Option(None, help="Only the models of this study id."),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Registered model versions, oldest first."""
    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        briefs = ask_api(client, lambda c: c.models())
        briefs = [b for b in briefs if study is None or b["study_id"] == study]
    else:
        from fedcare.dashboard.views import model_brief

        try:
            with _store(home, db) as store:
                studies = {s.id: s for s in store.list_studies()}
                briefs = [model_brief(m, studies) for m in store.list_models(study)]
        except FedcareError as err:
            raise fail(err) from None
    if as_json:
        return echo_json(briefs)
    print_models(briefs)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    version: str,
    as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
) -> None:
    """A version's lineage and its model card."""
    client = remote_client(ctx, coordinator, ca)
    if client is not None:
        card, lineage = ask_api(client, lambda c: (c.model(version), c.lineage(version)))
        model = lineage["model"]
        chain = [model["version"], *(m["version"] for m in lineage["ancestors"])]
    else:
        from fedcare.dashboard.views import model_brief

        try:
            with _store(home, db) as store:
                models = store.lineage(version)
                model = model_brief(models[0], {})
        except FedcareError as err:
            raise fail(err) from None
        card, chain = models[0].card, [m.version for m in models]
    if as_json:
        typer.echo(json.dumps(card, indent=2, sort_keys=True))
        return
    print_model(model, chain, card)


def _drop_stale(out: Path, written: set[str]) -> None:
    """Remove bundle files an earlier export left in ``out`` that this one did not write (the
    bundle's manifest would refuse them)."""
    from fedcare.inference.bundle import BUNDLE_FILES

    for name in set(BUNDLE_FILES) - written:
        (out / name).unlink(missing_ok=True)


@models_app.command("export")
def models_export(
    ctx: typer.Context,
    version: str,
    out: Path = typer.Option(..., "--out", help="Folder for the model bundle."),
    home: Path = HOME,
    db: str | None = DB,
    coordinator: str | None = COORDINATOR,
    ca: Path | None = CA,
    as_json: bool = JSON,
) -> None:
    """Write a version's model bundle: card (model_card.json), lineage, parameters
    (params.npz), what using it needs (bundle.json, preprocess.npz) and manifest.json.

    With --coordinator: downloads the API's zip of the same files and unpacks it into --out.
    Run it at a site with `fedcare site predict --model DIR`."""
    import tempfile

    client = remote_client(ctx, coordinator, ca)
    try:
        if client is not None:
            with tempfile.TemporaryDirectory() as tmp:
                archive = ask_api(client, lambda c: c.download_model(version, Path(tmp) / "m.zip"))
                written = {p.name for p in unpack_export(archive, out)}
        else:
            from fedcare.coordinator.registry_view import export_files

            with _store(home, db) as store:
                files = export_files(store, version)
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (out / name).write_bytes(data)
            written = set(files)
    except FedcareError as err:
        raise fail(err) from None
    _drop_stale(out, written)
    card_path, params_path = out / "model_card.json", out / "params.npz"
    if as_json:
        return echo_json({"card": str(card_path), "params": str(params_path), "bundle": str(out)})
    Console(emoji=False, stderr=True).print(
        f"card:   {card_path}\nparams: {params_path}\nbundle: {out}"
    )
