"""``fedcare analytics QUERY.yaml``: federated statistics, in simulation or on a federation.

Simulation (``--dataset`` or the spec's dataset): the built-in dataset split across its sites,
each with ``--min-cell``; dataset ``cdm`` (mapped site tables) answers on harmonized tables.
Federation (``--federation HOME``): the spec is queued as an analytics job on the coordinator
of HOME (run on its host, like ``fedcare study submit``); with ``--wait`` the command waits for
the result and writes it, otherwise it prints the job id for ``fedcare study report``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.errors import FedcareError

__all__ = [
    "analytics",
    "analytics_plan_summary",
    "federation_plan",
    "federation_spec",
    "is_analytics_file",
    "write_analytics_outputs",
]

console = Console(stderr=True)


def _summary(result: dict[str, Any]) -> Table:
    table = Table(title=f"analytics {result['name']}")
    for column in ("query", "type", "sites", "withheld cells (sites)"):
        table.add_column(column)
    for q in result["queries"]:
        withheld = ", ".join(f"{s}: {len(c)}" for s, c in q.get("suppressed", {}).items())
        table.add_row(q["name"], q["type"], str(len(q.get("sites", []))), withheld or "-")
    return table


def write_analytics_outputs(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.html`` for an analytics result into ``out``."""
    from fedcare.evaluation.analytics_report import write_analytics_report

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return results_path, write_analytics_report(result, out / "report.html")


def _columns(name: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The public feature names of built-in dataset ``name`` (read here, on this host); none
    for a dataset a site defines itself (schema + mapping), whose tables name the variables."""
    from fedcare.data.registry import DATASET_NAMES, load_dataset
    from fedcare.errors import DataError

    if name not in DATASET_NAMES:  # 'cdm' and site-defined datasets: harmonized tables
        return ()
    try:
        return load_dataset(name, **options).feature_names
    except DataError as err:
        raise FedcareError(
            f"cannot read the feature names of dataset {name!r} on this host, so queries "
            f"could not name its columns: {err}"
        ) from None


def _simulate(spec: Any, dataset: str | None, seed: int, min_cell: int) -> dict[str, Any]:
    from fedcare.analytics.disclosure import AnalyticsPolicy
    from fedcare.data.registry import load_dataset
    from fedcare.simulation.analytics import simulate_analytics

    name = dataset or spec.dataset
    if not name:
        raise FedcareError("the spec names no 'dataset'; pass --dataset NAME")
    options = spec.dataset_options if name == spec.dataset else {}
    ds = load_dataset(name, **options)
    policy = AnalyticsPolicy(min_cell=min_cell, seeded_noise=True)
    return simulate_analytics(spec, dataset=ds, policy=policy, seed=seed).to_dict()


def federation_spec(spec: Any, dataset: str | None) -> Any:
    """The spec as queued on a federation: ``--dataset`` replaces its dataset (name and
    options); a folder this host resolved paths from is dropped,
    so a steward's ``fedcare site plan`` on another machine prints the same hash."""
    from fedcare.records.config_file import BASE_DIR_OPTION

    options = {k: v for k, v in spec.dataset_options.items() if k != BASE_DIR_OPTION}
    update: dict[str, Any] = {"dataset_options": options}
    if dataset is not None and dataset != spec.dataset:
        update = {"dataset": dataset, "dataset_options": {}}
    return spec.model_copy(update=update)


def federation_plan(spec: Any) -> dict[str, Any]:
    """The plan the sites receive for ``spec`` on a federation (its hash is what a steward
    approves: ``fedcare site plan QUERY.yaml``)."""
    from fedcare.analytics.run import analytics_plan

    columns = _columns(spec.dataset, spec.dataset_options) if spec.dataset else ()
    return analytics_plan(spec, columns)


def is_analytics_file(path: Path) -> bool:
    """Whether a YAML file holds an analytics spec (``queries:``, or ``analytics:`` holding
    them) rather than a study; an unreadable file is left to the study reader's errors."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and (
        "queries" in data or (isinstance(data.get("analytics"), dict) and "model" not in data)
    )


def analytics_plan_summary(path: Path, dataset: str | None) -> tuple[str, str]:
    """The hash a site's steward approves for the analytics spec at ``path`` (run on a
    federation with ``--dataset`` ``dataset``) and a summary naming what it computes."""
    from fedcare.analytics.spec import AnalyticsSpec
    from fedcare.site.plans import analytics_plan_hash

    spec = federation_spec(AnalyticsSpec.from_yaml(path), dataset)
    plan = federation_plan(spec)
    lines = [
        f"analytics:     {spec.name} (approve under this name)",
        f"dataset:       {spec.dataset or '(the site default)'}",
        f"min_cell:      {spec.min_cell} (a site's own minimum applies when larger)",
        f"noise:         {spec.noise.model_dump() if spec.noise else 'none'}",
    ]
    lines += [
        f"query {i}:       {q.model_dump(exclude_defaults=True)}"
        for i, q in enumerate(spec.queries)
    ]
    return analytics_plan_hash(plan), "\n".join(lines)


def _job_config(spec: Any, min_sites: int) -> dict[str, Any]:
    from fedcare.coordinator.analytics_jobs import analytics_study_config

    columns = federation_plan(spec)["columns"]
    return analytics_study_config(spec, min_sites=min_sites, columns=columns)


def _open_store(home: Path, db: str | None) -> Any:
    """The store of an existing coordinator home (never created here)."""
    from fedcare.coordinator.home import open_home

    return open_home(home, db)


def _wait(store: Any, study_id: str, timeout: float) -> dict[str, Any]:
    from fedcare.coordinator.analytics_jobs import analytics_job_result

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if store.get_study(study_id).status in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    result = analytics_job_result(store, study_id)
    assert result is not None
    return result


def analytics(
    query: Path = typer.Argument(..., help="Analytics spec (YAML)."),
    dataset: str | None = typer.Option(None, help="Built-in dataset (default: the spec's)."),
    out: Path = typer.Option(Path("runs/analytics"), help="Folder for results.json, report.html."),
    seed: int = typer.Option(0, help="Seed of the simulated sites' DP noise."),
    min_cell: int = typer.Option(5, help="Every simulated site's minimum cell size."),
    federation: Path | None = typer.Option(None, help="Coordinator home: run on the federation."),
    db: str | None = typer.Option(None, help="Coordinator database URL (default: in HOME)."),
    min_sites: int = typer.Option(1, help="Sites to wait for on the federation."),
    wait: bool = typer.Option(False, help="On a federation: wait for the result and write it."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits."),
) -> None:
    """Run federated analytics: in simulation, or queued on a running coordinator."""
    from fedcare.analytics.spec import AnalyticsSpec

    try:
        spec = AnalyticsSpec.from_yaml(query)
        if federation is None:
            result = _simulate(spec, dataset, seed, min_cell)
        else:
            spec = federation_spec(spec, dataset)
            config = _job_config(spec, min_sites)
            with _open_store(federation, db) as store:
                study_id = store.create_study(spec.name, config, 0)
                if not wait:
                    typer.echo(study_id)
                    return
                result = _wait(store, study_id, timeout)
        results_path, report_path = write_analytics_outputs(result, out)
    except FedcareError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    console.print(_summary(result))
    console.print(f"results: {results_path}\nreport:  {report_path}")
