"""``fedcare site feedback|reference``: monitor a deployed model at the site.

``site predict --log-to FOLDER`` (or a model version of the site's store) keeps each run's
predictions; ``site reference`` freezes this site's training-row statistics beside them;
``site feedback`` joins outcomes with the predictions and writes the local result and the
aggregate ``monitoring.json`` (:mod:`fedcare.inference.feedback`). Only local files are read
and written. Heavy libraries load inside the commands.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from fedcare.cli.common import console, echo_json, fail
from fedcare.cli.options import JSON
from fedcare.errors import ConfigError, FedcareError

__all__ = ["register", "site_feedback", "site_reference"]

MODEL = typer.Option(
    ...,
    "--model",
    help="A model version of the site's store, or the folder `site predict --log-to` wrote.",
)
STATE = typer.Option(Path("site-state"), help="The site's state folder (its model store).")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not a date (YYYY-MM-DD[THH:MM])") from None


def _site_id(site: str | None, state: Path) -> str | None:
    """``--site``, else the id of the kit the site agent last started with (if recorded)."""
    if site is not None:
        return site
    from fedcare.site.stewardship import KIT_RECORD, recorded_kit, site_identity

    if not (state / KIT_RECORD).is_file():
        return None
    try:
        return site_identity(recorded_kit(state))
    except (FedcareError, OSError, ValueError):
        return None


def _min_cell(min_cell: int | None, policy: Path | None) -> int:
    from fedcare.analytics.disclosure import DEFAULT_MIN_CELL

    if min_cell is not None:
        if min_cell < 1:
            raise ConfigError(f"--min-cell must be at least 1, got {min_cell}")
        return min_cell
    if policy is not None:
        from fedcare.site.policy import SitePolicy

        return SitePolicy.from_yaml(policy).min_cell
    return DEFAULT_MIN_CELL


def site_feedback(
    model: str = MODEL,
    labels: Path = typer.Option(..., "--labels", help="Outcomes: a .csv or .parquet file."),
    id_column: str = typer.Option(..., "--id-column", help="The id column of the outcomes."),
    label_column: str = typer.Option(..., "--label-column", help="The outcome column."),
    since: str | None = typer.Option(None, help="Only predictions made since this date."),
    state: Path = STATE,
    site: str | None = typer.Option(
        None, help="This site's id for monitoring.json (default: from the kit on --state)."
    ),
    min_cell: int | None = typer.Option(
        None, help="Smallest count reported (default: the --policy's min_cell, else 5)."
    ),
    policy: Path | None = typer.Option(None, help="The site policy (YAML) giving min_cell."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for confidence intervals."),
    as_json: bool = JSON,
) -> None:
    """Join outcomes with a deployed model's predictions: performance, calibration, drift."""
    import numpy as np

    from fedcare.inference.feedback import run_feedback
    from fedcare.inference.monitor import resolve_model

    try:
        folder = resolve_model(model, state)
        result = run_feedback(
            folder,
            labels,
            id_column=id_column,
            label_column=label_column,
            rng=np.random.default_rng(),
            since=_since(since),
            min_cell=_min_cell(min_cell, policy),
            site=_site_id(site, state),
            bootstrap=bootstrap,
        )
    except FedcareError as err:
        raise fail(err) from None
    if as_json:
        return echo_json(
            {
                "monitoring": result.monitoring,
                "monitoring_path": str(result.monitoring_path),
                "local_path": str(result.local_path),
                "proposal": str(result.proposal) if result.proposal else None,
            }
        )
    _print(result)


def _value(entry: Any) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "withheld"
    lo, hi = entry.get("lo"), entry.get("hi")
    ci = f" ({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else ""
    return f"{entry['value']:.3f}{ci}"


def _print(result: Any) -> None:
    from rich.table import Table

    m = result.monitoring
    counts = result.local["counts"]
    console.print(
        f"model {m['model']}: {m['predictions']['n']} predictions in "
        f"{m['predictions']['runs']} run(s); outcomes {counts['labels']}, matched "
        f"{counts['matched']}, without prediction {counts['unmatched_labels']}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    perf = m["performance"]
    table = Table(title="post-deployment performance")
    table.add_column("metric")
    table.add_column("value (95% CI)")
    if perf is None:
        table.add_row("(all)", "withheld or not computed")
    else:
        for name, entry in perf.get("metrics", {}).items():
            table.add_row(name, _value(entry))
        slope = (perf.get("calibration") or {}).get("slope")
        table.add_row("calibration slope", "n/a" if slope is None else f"{slope:.3f}")
    console.print(table)
    drift = m["drift"]
    if drift is not None:
        shifts = Table(title="drift (PSI vs this site's training rows)")
        for column in ("feature", "PSI", "status", "without drift ~"):
            shifts.add_column(column)
        for name, d in sorted(drift["features"].items(), key=lambda kv: -kv[1]["psi"]):
            shifts.add_row(name, f"{d['psi']:.3f}", d["status"], f"{d['noise']:.3f}")
        if drift.get("score_psi") is not None:
            shifts.add_row(
                "(score)", f"{drift['score_psi']:.3f}", "", f"{drift['score_noise']:.3f}"
            )
        console.print(shifts)
    else:
        console.print("drift: no reference.json (site reference) or too few rows")
    for alert in m["alerts"]:
        console.print(f"ALERT {alert['kind']}: {alert['detail']}", markup=False, highlight=False)
    if result.proposal is not None:
        console.print(f"proposed study (not submitted): {result.proposal}", markup=False)
    console.print(f"monitoring summary: {result.monitoring_path}", markup=False, soft_wrap=True)


def _training_rows(bundle: Any, input: Path | None, data: Path | None, dataset: str | None) -> Any:
    """This site's raw training rows in the bundle's feature order: from ``input`` (columns by
    name) or the site data file's dataset (the training split the site's tasks use)."""
    import numpy as np

    from fedcare.inference.predict import _batches, _matrix, read_columns

    features = bundle.features
    if (input is None) == (data is None):
        raise ConfigError("give the training rows: --input FILE, or --data SITE.yaml")
    if input is not None:
        absent = [f for f in features if f not in read_columns(input)]
        if absent:
            raise ConfigError(f"training rows {input} have no column {absent[0]!r}")
        parts = [_matrix(b, features) for b in _batches(input, features, features)]
        return np.vstack(parts) if parts else np.zeros((0, len(features)))
    from fedcare.site.config import SiteDataConfig

    config = SiteDataConfig.from_yaml(data)  # type: ignore[arg-type]
    name = dataset or ((bundle.card or {}).get("config") or {}).get("dataset", {}).get("name")
    if name not in config.datasets:
        raise ConfigError(f"site data file {data} has no dataset {name!r} (--dataset NAME)")
    X = np.asarray(config.datasets[name].load().train.X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(features):
        raise ConfigError(
            f"dataset {name!r} has rows of shape {X.shape}, the model {len(features)} features"
        )
    return X


def site_reference(
    model: str = MODEL,
    input: Path | None = typer.Option(None, "--input", help="Training rows (.csv/.parquet)."),
    data: Path | None = typer.Option(
        None, "--data", help="Or: the site data file; its dataset's training split is used."
    ),
    dataset: str | None = typer.Option(
        None, help="The dataset of --data (default: the study's, from the model card)."
    ),
    state: Path = STATE,
    bins: int = typer.Option(10, help="Bins per numeric feature (deciles)."),
) -> None:
    """Freeze this site's training-row statistics as the model's drift reference."""
    from fedcare.inference.bundle import load_bundle
    from fedcare.inference.monitor import BUNDLE_DIR, resolve_model, write_reference

    try:
        folder = resolve_model(model, state)
        bundle = load_bundle(folder / BUNDLE_DIR)
        X = _training_rows(bundle, input, data, dataset)
        path = write_reference(folder, bundle, X, bins=bins)
    except FedcareError as err:
        raise fail(err) from None
    console.print(f"reference of {len(X)} training rows: {path}", markup=False, soft_wrap=True)


def register(site_app: typer.Typer) -> None:
    """Add ``feedback`` and ``reference`` to ``fedcare site``."""
    site_app.command("feedback")(site_feedback)
    site_app.command("reference")(site_reference)
