"""``fedcare analytics QUERY.yaml``: federated statistics, in simulation or on a federation.

Simulation (``--dataset`` or the spec's dataset): the built-in dataset split across its sites,
each with ``--min-cell``; dataset ``cdm`` (mapped site tables) answers on harmonized tables.
Federation (``--federation HOME``): the spec is queued as an analytics job on the coordinator
of HOME (run on its host, like ``fedcare study submit``); with ``--wait`` the command waits for
the result and writes it, otherwise it prints the job id for ``fedcare study report``. From a
desk, ``--coordinator URL`` queues the same job through ``POST /api/v1/analytics`` (the caller
owns it) and ``--wait`` follows its event stream, then writes the same files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedcare.cli.common import _store, echo_json, fail
from fedcare.cli.options import CA
from fedcare.errors import FedcareError

__all__ = [
    "analytics",
    "analytics_plan_summary",
    "is_analytics_file",
    "write_analytics_outputs",
]

console = Console(emoji=False, stderr=True)


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
    from fedcare.coordinator.analytics_submit import federation_plan, federation_spec
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


def _job_json(store: Any, job_id: str) -> dict[str, Any]:
    """The job as ``GET /api/v1/analytics/{id}`` shows it (``--json`` on the host)."""
    from fedcare.coordinator.analytics_jobs import analytics_job_result
    from fedcare.dashboard.views import analytics_job_view

    result = analytics_job_result(store, job_id, require=False)
    return analytics_job_view(store.get_study(job_id), result)


def _queued(job: dict[str, Any], as_json: bool) -> None:
    """A queued job not waited for: its id on stdout (``--json``: the job)."""
    if as_json:
        echo_json(job)
    else:
        typer.echo(job["id"])


def _remote(
    client: Any, query: Path, dataset: str | None, min_sites: int, wait: bool, timeout: float
) -> dict[str, Any]:
    """Submit over the API (``POST /analytics``); the job (not waiting) or, with ``wait``, its
    result once it ended (as the host's ``--wait``: an error if it has none)."""
    from fedcare.errors import ConflictError

    with client:
        job = client.submit_analytics(query, dataset=dataset, min_sites=min_sites)
        if not wait:
            return {"job": job}
        client.wait(job["id"], timeout_s=timeout)
        done = client.analytics_job(job["id"])
    if done["result"] is None:
        reason = f": {done['reason']}" if done.get("reason") else ""
        raise ConflictError(f"analytics job {job['id']} has no result ({done['status']}{reason})")
    return {"result": done["result"]}


def analytics(
    ctx: typer.Context,
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
    coordinator: str | None = typer.Option(
        None,
        "--coordinator",
        help="Queue the job through this coordinator's HTTP API (https://HOST:PORT) instead of "
        "--federation HOME; token from FEDCARE_TOKEN or the client config file. Only this "
        "option selects the API here (FEDCARE_COORDINATOR does not: without it the command "
        "simulates).",
    ),
    ca: Path | None = CA,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print JSON: the queued job as the HTTP API shows it, or (with a result) the "
        "paths written.",
    ),
) -> None:
    """Run federated analytics: in simulation, or queued on a running coordinator (on its host
    with --federation HOME, from a desk with --coordinator URL)."""
    from fedcare.analytics.spec import AnalyticsSpec
    from fedcare.cli.remote import api_fail, remote_client

    if coordinator and federation is not None:
        both = "give either --coordinator (the HTTP API) or --federation HOME (on its host)"
        raise fail(FedcareError(both + ", not both"))
    client = remote_client(ctx, coordinator, ca)
    try:
        if client is not None:
            try:
                answer = _remote(client, query, dataset, min_sites, wait, timeout)
            except FedcareError as err:
                raise api_fail(err, client) from None
            if "job" in answer:
                return _queued(answer["job"], as_json)
            result = answer["result"]
        elif federation is None:
            result = _simulate(AnalyticsSpec.from_yaml(query), dataset, seed, min_cell)
        else:
            from fedcare.coordinator.analytics_submit import queue_analytics_job

            spec = AnalyticsSpec.from_yaml(query)
            with _store(federation, db) as store:
                study_id = queue_analytics_job(store, spec, dataset=dataset, min_sites=min_sites)
                if not wait:
                    return _queued(_job_json(store, study_id), as_json)
                result = _wait(store, study_id, timeout)
        results_path, report_path = write_analytics_outputs(result, out)
    except FedcareError as err:
        raise fail(err) from None
    if as_json:
        return echo_json({"results": str(results_path), "report": str(report_path)})
    console.print(_summary(result))
    console.print(f"results: {results_path}\nreport:  {report_path}")
