"""``fedcare demo --full``: after the study, close the loop over the same running federation.

The operator deploys the registered model to the 4 hospitals (``fedcare models deploy``); the
demo acts as each hospital's steward and approves it (``fedcare site approve-deployment``);
the agents verify and take the model into their store (with their drift reference); each
hospital scores its **test rows**, rows no training round saw, as new patients
(``fedcare site predict --model VERSION``, logged); their true outcomes arrive as
``outcomes.csv`` and ``fedcare site feedback`` writes ``monitoring.json``, which the agents
upload. The demo waits until the coordinator holds every hospital's summary and prints the
post-deployment panel from what the coordinator holds (aggregates only).

The same library calls as the CLI commands (``tests/deployment/test_model_deploy.py``), in
one process; heavy modules load inside the functions.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcare.errors import FedcareError

__all__ = ["close_the_loop", "panel_rows", "print_panel"]

WAIT_S = 120.0
#: Who the demo says asked for the deployment and approved it (audited as such).
OPERATOR = "fedcare-demo"


def _wait(
    store: Any,
    version: str,
    sites: Sequence[str],
    done: Callable[[Any], bool],
    goal: str,
    check: Callable[[], None],
) -> dict[str, Any]:
    """Poll the coordinator's deployments until ``done`` holds for each site's latest one."""
    end = time.monotonic() + WAIT_S
    while True:
        check()
        latest = {s: (store.list_deployments(version, s) or [None])[-1] for s in sites}
        failed = {s: d for s, d in latest.items() if d is not None and d.status in
                  ("failed", "refused")}  # fmt: skip
        if failed:
            why = "; ".join(f"{s}: {d.status} ({d.reason})" for s, d in failed.items())
            raise FedcareError(f"deployment of model {version} did not go through: {why}")
        if all(d is not None and done(d) for d in latest.values()):
            return latest
        if time.monotonic() > end:
            waiting = sorted(s for s, d in latest.items() if d is None or not done(d))
            raise FedcareError(f"no {goal} from {waiting} within {WAIT_S:.0f} s")
        time.sleep(0.2)


def _deploy(home: Path, kit: Path, store: Any, version: str, sites: Sequence[str]) -> None:
    """``fedcare models deploy VERSION --site ...`` on the coordinator's host (audited)."""
    from fedcare.coordinator.audit_trail import CoordinatorAudit
    from fedcare.coordinator.deployments import request_deployment

    audit = CoordinatorAudit.open(home, kit, actor="operator-cli")
    try:
        request_deployment(store, version, list(sites), OPERATOR, audit=audit)
    finally:
        audit.close()


def _approve(state: Path, kit: Path, version: str) -> None:
    """``fedcare site approve-deployment VERSION`` by the site's steward (sealed, audited)."""
    from fedcare.cli.site_models import _hash_of
    from fedcare.site.deployments import deployment_study
    from fedcare.site.stewardship import default_until, steward_store

    digest = _hash_of(state, version, None)
    steward = steward_store(state, kit, person=OPERATOR, via="cli")
    steward.approve(deployment_study(version), digest, default_until(), "approved by fedcare demo")


def _new_patients(
    data_file: Path, features: Sequence[str], site: str, folder: Path
) -> tuple[Path, Path, int]:
    """Write the site's test rows (raw features) as new patients, and their outcomes."""
    from fedcare.site.config import SiteDataConfig

    (entry,) = SiteDataConfig.from_yaml(data_file).datasets.values()
    test = entry.load().test
    ids = [f"{site}-{i:04d}" for i in range(len(test.X))]
    rows = folder / f"{site}-new-patients.csv"
    with rows.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", *features])
        for pid, x in zip(ids, test.X.tolist(), strict=True):
            writer.writerow([pid, *("" if v != v else v for v in x)])  # NaN: an empty cell
    outcomes = folder / f"{site}-outcomes.csv"
    with outcomes.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "outcome"])
        writer.writerows([pid, int(y)] for pid, y in zip(ids, test.y.tolist(), strict=True))
    return rows, outcomes, len(ids)


def _predict_and_feed_back(
    state: Path, version: str, site: str, rows: Path, outcomes: Path, folder: Path
) -> Path:
    """``site predict --model VERSION --state STATE`` (logged), then ``site feedback``."""
    import numpy as np

    from fedcare.inference.feedback import run_feedback
    from fedcare.inference.monitor import (
        PredictionLog,
        default_log_folder,
        new_run_id,
        open_log_folder,
        resolve_model,
    )
    from fedcare.inference.predict import predict_file
    from fedcare.inference.store import resolve_bundle, store_folder

    bundle = resolve_bundle(version, state)
    log_folder = default_log_folder(store_folder(version, state))
    if log_folder is None:
        raise FedcareError(f"model {version} is not in {site}'s store")
    log = PredictionLog(open_log_folder(log_folder, bundle), new_run_id(), bundle.features)
    out = folder / f"{site}-predictions.csv"
    predict_file(bundle, rows, out, id_column="patient_id", log=log)
    run_feedback(
        resolve_model(version, state),
        outcomes,
        id_column="patient_id",
        label_column="outcome",
        rng=np.random.default_rng(0),
        site=site,
        bootstrap=200,
    )
    return out


def close_the_loop(
    store: Any,
    *,
    root: Path,
    home: Path,
    kit: Path,
    data_files: dict[str, Path],
    version: str,
    out: Path,
    check: Callable[[], None],
    console: Console,
) -> dict[str, Any]:
    """Deploy ``version`` to every site of ``data_files``, approve, predict, feed back, and
    return each site's monitoring summary as the coordinator holds it.

    ``root/state/<site>`` is each running agent's state, ``kit.parent/sites/<site>`` its kit;
    ``check`` raises when a federation process died. Files go to ``out/deployment``.
    """
    from fedcare.inference.store import resolve_bundle

    sites = list(data_files)
    folder = out / "deployment"
    folder.mkdir(parents=True, exist_ok=True)
    _deploy(home, kit, store, version, sites)
    console.print(f"model {version} deployed to {', '.join(sites)}: waiting for the stewards")
    _wait(store, version, sites, lambda d: d.status == "pending", "pending decision", check)
    for site in sites:
        _approve(root / "state" / site, kit.parent / "sites" / site, version)
    console.print("each hospital's steward approved it; the agents verify and take it")
    _wait(store, version, sites, lambda d: d.status == "taken", "taken model", check)
    for site in sites:
        state = root / "state" / site
        features = resolve_bundle(version, state).features
        rows, outcomes, n = _new_patients(data_files[site], features, site, folder)
        _predict_and_feed_back(state, version, site, rows, outcomes, folder)
        shutil.copyfile(state / "models" / version / "monitoring.json",
                        folder / f"{site}-monitoring.json")  # fmt: skip
        console.print(f"{site}: {n} new patients scored, outcomes fed back")
    latest = _wait(store, version, sites, lambda d: d.monitoring is not None,
                   "monitoring summary at the coordinator", check)  # fmt: skip
    summaries = {s: d.monitoring for s, d in latest.items()}
    (folder / "coordinator-monitoring.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def _number(value: Any, digits: int = 3) -> str:
    return "withheld" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def panel_rows(summaries: dict[str, Any]) -> list[list[str]]:
    """One row per site: predicted, with outcomes, AUROC, calibration slope, largest feature
    PSI (its feature and status), alerts."""
    rows = []
    for site, m in summaries.items():
        perf = m.get("performance") or {}
        auroc = ((perf.get("metrics") or {}).get("auroc") or {}).get("value")
        slope = (perf.get("calibration") or {}).get("slope")
        features = ((m.get("drift") or {}).get("features")) or {}
        if features:
            name, top = max(features.items(), key=lambda kv: kv[1]["psi"])
            psi = f"{top['psi']:.3f} {name} {top['status']} (noise ~{top['noise']:.2f})"
        else:
            psi = "withheld"
        alerts = ", ".join(a["kind"] for a in m.get("alerts") or []) or "none"
        matched = (m.get("outcomes") or {}).get("matched")
        rows.append([site, str(m["predictions"]["n"]), str(matched if matched is not None
                     else "withheld"), _number(auroc), _number(slope), psi, alerts])  # fmt: skip
    return rows


def print_panel(summaries: dict[str, Any], out: Path, root: Path, kept: bool) -> None:
    """The post-deployment panel (stdout) and where its files are."""
    from rich.table import Table

    table = Table(title="post-deployment monitoring (as the coordinator holds it)")
    for column in ("hospital", "predicted", "with outcome", "AUROC", "calib. slope",
                   "largest feature PSI", "alerts"):  # fmt: skip
        table.add_column(column)
    for row in panel_rows(summaries):
        table.add_row(*row)
    show = Console(emoji=False, width=max(Console(emoji=False).width, 110))
    show.print(table)
    show.print(
        "PSI of few rows is noisy: judge it against its noise (the PSI expected without drift); "
        "alerts fire only for thresholds a study's monitoring: section sets (docs/deployment.md)",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    folder = out / "deployment"
    where = (
        f"new patients, outcomes, predictions, monitoring: {folder}/<hospital>-*.csv|json\n"
        f"prediction logs and monitoring at each site: "
        f"{root / 'state' / '<hospital>' / 'models'}" + ("" if kept else " (removed; --keep)")
    )
    show.print(where, markup=False, highlight=False, soft_wrap=True)
