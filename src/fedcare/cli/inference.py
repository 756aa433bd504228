"""``fedcare site predict|export-onnx``: run an exported model bundle at the site.

``fedcare models export VERSION --out DIR`` writes the bundle (:mod:`fedcare.inference.bundle`);
``site predict`` scores new rows with it locally (nothing leaves the site) and ``site
export-onnx`` writes it as one ONNX graph for the hospital's own systems. Both verify the
bundle's hashes first. Heavy libraries load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fedcare.cli import monitoring
from fedcare.cli.common import console, echo_json, fail
from fedcare.cli.options import JSON
from fedcare.errors import ConfigError, FedcareError

__all__ = ["register", "site_export_onnx", "site_predict"]

MODEL = typer.Option(
    ...,
    "--model",
    help="The model: a version in this site's model store (--state), or a bundle folder or "
    ".zip (models export).",
)
STATE = typer.Option(
    Path("site-state"), help="The site's state folder (its model store is STATE/models)."
)
EXPECT = typer.Option(
    None, "--expect-hash", help="Refuse the bundle unless its hash is this sha256:<hex>."
)


def site_predict(
    model: str = MODEL,
    input: Path = typer.Option(
        ...,
        "--input",
        help="What to score: a .csv or .parquet file of rows, or a folder of DICOM images "
        "(an image model).",
    ),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="Where the scores go (CSV)."),
    threshold: float | None = typer.Option(
        None, help="Decision threshold (default: the bundle's, from the study)."
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="A column copied to the output beside each row's scores."
    ),
    expect_hash: str | None = EXPECT,
    log_to: Path | None = typer.Option(
        None,
        "--log-to",
        help="Also keep the predictions (ids, scores, raw features) in this folder at the site, "
        "for `site feedback` (default: the version folder of a store model).",
    ),
    no_log: bool = typer.Option(False, "--no-log", help="Keep no prediction log."),
    policy: Path | None = typer.Option(
        None,
        "--policy",
        help="The site policy (YAML; needed for a study package's model, which runs under its "
        "sandbox mode, limits and trusted signers).",
    ),
    state: Path = STATE,
    as_json: bool = JSON,
) -> None:
    """Score rows or DICOM images with a model at this site (local files only: nothing
    leaves)."""
    from fedcare.inference.monitor import (
        PredictionLog,
        default_log_folder,
        new_run_id,
        open_log_folder,
    )
    from fedcare.inference.predict import predict_file
    from fedcare.inference.store import resolve_bundle, store_folder

    packages = None
    try:
        bundle = resolve_bundle(model, state, expected_hash=expect_hash)
        packages = _package_runner(bundle.model, state, policy)
        log = None
        log_to = None if no_log else log_to or default_log_folder(store_folder(model, state))
        if log_to is not None:
            folder = open_log_folder(log_to, bundle)
            log = PredictionLog(folder, new_run_id(), bundle.features)
        summary = predict_file(
            bundle, input, out, threshold=threshold, id_column=id_column, log=log,
            packages=packages,
        )  # fmt: skip
    except FedcareError as err:
        raise fail(err) from None
    finally:
        if packages is not None:
            packages.close()
    if as_json:
        return echo_json(
            {
                "rows": summary.rows,
                "out": str(summary.out),
                "columns": summary.columns,
                "ignored_columns": summary.ignored_columns,
                "threshold": summary.threshold,
                "bundle_sha256": bundle.bundle_hash,
                "seconds": summary.seconds,
                "log": None if summary.log is None else str(summary.log),
                "skipped": summary.skipped,
            }
        )
    if summary.ignored_columns:
        console.print(
            f"ignored {len(summary.ignored_columns)} column(s) the model does not use: "
            + ", ".join(summary.ignored_columns),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if summary.skipped:
        console.print(
            f"skipped {len(summary.skipped)} file(s) that could not be scored as images:\n"
            + "\n".join(f"  {s['file']}: {s['reason']}" for s in summary.skipped),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    cut = "" if summary.threshold is None else f" (threshold {summary.threshold:g})"
    console.print(
        f"{summary.rows} rows scored{cut} in {summary.seconds:.2f} s: {summary.out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if summary.log is not None:
        console.print(f"kept at the site: {summary.log}", markup=False, soft_wrap=True)


def _package_runner(spec: dict[str, Any], state: Path, policy: Path | None) -> Any:
    """For a study package's model: the package checked in the site's store and the runner
    builder the site's worker trains with (:func:`fedcare.site.worker.package_builder`)."""
    if spec.get("kind") != "package":
        return None
    from fedcare.inference.package_scorer import describe_package, require_site_package
    from fedcare.packages.store import PackageStore
    from fedcare.site.packages import PACKAGES_DIR
    from fedcare.site.policy import SitePolicy
    from fedcare.site.worker import package_builder

    store = PackageStore(state / PACKAGES_DIR)
    require_site_package(spec, store)  # the package first: the error says how to get it
    if policy is None:
        raise ConfigError(
            f"the model runs study package {describe_package(spec)}: give this site's policy "
            "(--policy, the file `site start --policy` reads) for its sandbox, limits and "
            "trusted signers"
        )
    rules = SitePolicy.from_yaml(policy)
    require_site_package(spec, store, trusted_signers=rules.packages.trusted_signers)
    return package_builder(
        state,
        sandbox=rules.sandbox,
        time_limit=rules.resources.task_time_limit_s,
        memory_limit_mb=rules.resources.memory_limit_mb,
        devices=rules.devices,
    )


def site_export_onnx(
    model: str = MODEL,
    out: Path = typer.Option(Path("model.onnx"), "--out", help="The ONNX file to write."),
    input_dtype: str = typer.Option("float32", help="Input tensor type: float32 or float64."),
    expect_hash: str | None = EXPECT,
    state: Path = STATE,
) -> None:
    """Write a model bundle as one ONNX graph with its frozen preprocessing (onnx extra)."""
    from fedcare.inference.onnx_export import export_onnx
    from fedcare.inference.store import resolve_bundle

    try:
        bundle = resolve_bundle(model, state, expected_hash=expect_hash)
        path = export_onnx(bundle, out, input_dtype=input_dtype)
    except FedcareError as err:
        raise fail(err) from None
    features = ", ".join(bundle.features)
    console.print(f"onnx: {path}\ninput 'features' in this order: {features}", markup=False,
                  highlight=False, soft_wrap=True)  # fmt: skip


def register(site_app: typer.Typer) -> None:
    """Add ``predict`` and ``export-onnx`` to ``fedcare site``."""
    from fedcare.cli.site_models import register as register_site_models

    site_app.command("predict")(site_predict)
    site_app.command("export-onnx")(site_export_onnx)
    register_site_models(site_app)
    monitoring.register(site_app)
