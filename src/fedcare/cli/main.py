"""The ``fedcare`` command: parse arguments, call the library, print. Nothing else.

Every command imports what it needs inside its body, so ``fedcare --help`` and status commands
do not pay for scikit-learn, scipy, pandas or torch (``tests/cli/test_startup.py`` keeps it so).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedcare.errors import ConfigError, FedcareError

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fedcare: federated learning and analytics for hospitals.",
)
console = Console(emoji=False, stderr=True)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load_study(study: Path | None, dataset: str | None) -> StudyConfig:
    from fedcare.records.study import StudyConfig  # pydantic models and aggregators: load late

    if study is not None:
        return StudyConfig.from_yaml(study)
    if dataset is None:
        raise FedcareError("give a study file, or --dataset NAME to use examples/NAME.yaml")
    path = EXAMPLES / f"{dataset}.yaml"
    if not path.exists():
        raise FedcareError(f"no example study for dataset {dataset!r} at {path}")
    return StudyConfig.from_yaml(path)


def _fmt(value: Any) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def _summary_table(results: dict[str, Any]) -> Table:
    metric = results["metrics"][0]
    table = Table(title=f"{results['study']['name']}: {metric} on each site's test split")
    table.add_column("model")
    for site in results["sites"]:
        table.add_column(site, justify="right")
    table.add_column("unweighted mean", justify="right")
    rows = [("federated", results["final"])]
    for site, entry in results.get("baselines", {}).get("local", {}).items():
        rows.append((f"local-{site}", entry))
    if "pooled" in results.get("baselines", {}):
        rows.append(("pooled", results["baselines"]["pooled"]))
    if "personalization" in results:  # each site's own personal model on its test split
        block = results["personalization"]
        own = {s: e.get("personal") or {} for s, e in block["sites"].items()}
        mean = block["mean"]["personal"]
        rows.append((f"personal-{block['method']}", {"per_site": own, "unweighted": mean}))
    for label, entry in rows:
        cells = [_fmt(entry["per_site"].get(s, {}).get(metric)) for s in results["sites"]]
        table.add_row(label, *cells, _fmt(entry["unweighted"].get(metric)))
    return table


@app.command()
def simulate(
    study: Path | None = typer.Argument(None, help="Study file (YAML)."),
    dataset: str | None = typer.Option(None, help="Use examples/DATASET.yaml."),
    out: Path = typer.Option(Path("runs/latest"), help="Folder for results.json and report.html."),
    seed: int | None = typer.Option(None, help="Override the study's seed."),
    rounds: int | None = typer.Option(None, help="Override the number of rounds."),
    strategy: str | None = typer.Option(None, help="Override the strategy (e.g. fedadam)."),
    workers: int = typer.Option(
        1,
        help="Worker processes the sites train in, concurrently (1: one after another, "
        "in this process); the same model either way. With --backend ray: Ray actors "
        "(default one per CPU, up to the site count).",
    ),
    backend: str | None = typer.Option(
        None,
        help="Where the sites run: inmemory (one after another, in this process), parallel "
        "(--workers processes) or ray (Ray actors; the ray extra). Default: parallel when "
        "--workers > 1, else inmemory.",
    ),
    address: str | None = typer.Option(
        None,
        help="With --backend ray: an existing Ray cluster's address (host:port); "
        "default: a local Ray instance on 127.0.0.1.",
    ),
) -> None:
    """Run a study in simulation and write results.json and report.html."""
    from fedcare.cli.output import write_outputs
    from fedcare.simulation.run import run_simulation

    try:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        config = _load_study(study, dataset)
        overrides: dict[str, Any] = {}
        if seed is not None:
            overrides["seed"] = seed
        if rounds is not None:
            overrides["rounds"] = rounds
        if strategy is not None:
            overrides["strategy"] = {"name": strategy, "options": {}}
        config = config.with_overrides(**overrides) if overrides else config
        metric_name = None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metric]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            tasks: dict[str, Any] = {}

            def on_round(label: str, record: Any) -> None:
                nonlocal metric_name
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=config.rounds, metric="")
                text = ""
                if record.evaluate:
                    weighted = record.evaluate.get("weighted", {})
                    metric_name = metric_name or next(iter(weighted), None)
                    if metric_name:
                        text = f"weighted {metric_name} {_fmt(weighted.get(metric_name))}"
                bar.update(tasks[label], completed=record.round, metric=text)

            results = run_simulation(
                config,
                progress=on_round,
                site_reports=out / "sites",
                workers=workers,
                backend=backend,
                address=address,
            )
        results_path, report_path = write_outputs(results, out)
    except FedcareError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    console.print(_summary_table(results))
    from fedcare.cli.loso_table import loso_table

    if (loso := loso_table(results)) is not None:
        console.print(loso)
    privacy = results.get("privacy") or {}
    if privacy.get("study_epsilon") is not None:  # the budget guard (fedcare.privacy.guard)
        budget = privacy.get("budget")
        limit = "no budget" if budget is None else f"budget privacy.epsilon {budget:g}"
        console.print(
            f"epsilon spent {privacy['study_epsilon']:.3g} ({limit}; delta {privacy['delta']:g})",
            highlight=False,
        )
    console.print(f"results: {results_path}\nreport:  {report_path}")
    if (out / "sites").is_dir():  # saliency maps each site kept for itself (never sent)
        console.print(f"site-only reports: {out / 'sites'}", highlight=False, soft_wrap=True)


@app.command()
def version() -> None:
    """Print the fedcare version."""
    from fedcare._version import __version__

    typer.echo(__version__)


def _register_deployment() -> None:
    from fedcare.cli import deploy, models, provision, sites
    from fedcare.cli.analytics import analytics
    from fedcare.cli.audit import audit_app
    from fedcare.cli.console import site_console
    from fedcare.cli.data import data_app
    from fedcare.cli.demo import demo
    from fedcare.cli.inference import register as register_inference
    from fedcare.cli.model_deploy import register as register_model_deploy
    from fedcare.cli.packages import package_app
    from fedcare.cli.users import users_app

    app.add_typer(provision.provision_app, name="provision")
    app.add_typer(deploy.coordinator_app, name="coordinator")
    deploy.site_app.command("console")(site_console)  # here: cli.console uses cli.deploy
    register_inference(deploy.site_app)  # site predict, site export-onnx
    app.add_typer(deploy.site_app, name="site")
    app.add_typer(deploy.study_app, name="study")
    app.add_typer(audit_app, name="audit")
    app.add_typer(data_app, name="data")
    app.command("sites")(sites.sites)
    app.command("demo")(demo)
    app.command("analytics")(analytics)
    register_model_deploy(models.models_app)  # models deploy, models deployments
    app.add_typer(models.models_app, name="models")
    app.add_typer(package_app, name="package")
    app.add_typer(users_app, name="users")


_register_deployment()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
