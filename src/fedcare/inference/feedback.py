"""``fedcare site feedback``: outcomes joined with a deployed model's logged predictions.

At the site, for one model version folder (:mod:`fedcare.inference.monitor`):

1. the logged predictions (every ``site predict`` run, or those since a date) and an outcomes
   file (CSV or Parquet: an id column and an outcome column) are joined by id. An id given
   twice in the outcomes, or predicted in two runs, is refused (choose the runs with ``since``);
   outcomes without a prediction and predictions without an outcome are counted;
2. post-deployment performance and calibration on the matched rows:
   :func:`fedcare.evaluation.clinical.site_summary` (binary and regression models);
3. drift of every input feature, and of the score, over all the period's logged rows: the
   population stability index against the site's reference (:mod:`fedcare.inference.drift`);
4. alerts on the study's thresholds and, when any fires, a proposed fine-tuning study
   (:mod:`fedcare.inference.alerts`).

Written: ``feedback/<run>.json`` (the local result: every number unsuppressed, kept at the
site) and ``monitoring.json`` (aggregates only, small cells withheld: what may be sent to the
coordinator), and ``proposed-study.yaml`` when an alert fires.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.analytics.disclosure import DEFAULT_MIN_CELL
from fedcare.errors import DataError, ValidationError
from fedcare.evaluation.clinical import site_summary
from fedcare.inference.alerts import alerts, propose_update, thresholds_of, write_proposal
from fedcare.inference.bundle import ModelBundle, load_bundle
from fedcare.inference.drift import drift
from fedcare.inference.monitor import (
    BUNDLE_DIR,
    FEATURE_PREFIX,
    FEEDBACK_DIR,
    MONITORING_FILE,
    new_run_id,
    read_predictions,
    read_reference,
)
from fedcare.inference.predict import NULL_VALUES
from fedcare.inference.withhold import shown, withhold_summary

__all__ = ["PROPOSAL_FILE", "FeedbackResult", "join_outcomes", "read_outcomes", "run_feedback"]

PROPOSAL_FILE = "proposed-study.yaml"
MONITORING_VERSION = 1


@dataclass(frozen=True)
class FeedbackResult:
    """What one feedback run wrote."""

    monitoring: dict[str, Any]
    local: dict[str, Any]
    monitoring_path: Path
    local_path: Path
    proposal: Path | None


def read_outcomes(
    path: Path, id_column: str, label_column: str
) -> tuple[list[str | None], np.ndarray]:
    """Ids (as text) and outcomes (float; ``NaN`` where empty) of an outcomes CSV or Parquet."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            convert = pacsv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True)
            table = pacsv.read_csv(path, convert_options=convert)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"cannot read outcomes {path}: {err}") from None
    for column in (id_column, label_column):
        if column not in table.column_names:
            raise DataError(f"outcomes {path} have no column {column!r}")
    try:
        labels = pc.cast(table[label_column], pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"outcomes {path}: column {label_column!r} is not numeric") from None
    ids = pc.cast(table[id_column], pa.string()).to_pylist()
    return ids, np.asarray(labels.to_numpy(zero_copy_only=False), dtype=np.float64)


def _first_duplicate(ids: list[str], what: str) -> None:
    counts = Counter(ids)
    repeated = [(i, c) for i, c in counts.items() if c > 1]
    if repeated:
        more = f" ({len(repeated) - 1} more ids repeated)" if len(repeated) > 1 else ""
        raise DataError(f"{what}: id {repeated[0][0]!r} appears {repeated[0][1]} times{more}")


def join_outcomes(
    predicted_ids: list[str | None], outcome_ids: list[str | None], outcomes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(prediction rows, outcomes, counts)`` of the ids found in both.

    Outcomes with an empty id or value are left out (counted). ``counts``: ``labels`` (outcomes
    with id and value), ``matched``, ``unmatched_labels`` (outcomes never predicted),
    ``unmatched_predictions``, ``empty`` and ``unmatched_ids`` (up to 20, for the local result).

    Raises
    ------
    DataError
        An id given twice in the outcomes, or predicted twice (names it).
    """
    given = [r for r, i in enumerate(outcome_ids) if i is not None and not np.isnan(outcomes[r])]
    keep = [str(outcome_ids[r]) for r in given]
    _first_duplicate(keep, "the outcomes file: one outcome per id")
    named = [i for i in predicted_ids if i is not None]
    _first_duplicate(
        named, "the logged predictions (predicted in several runs; choose runs with --since)"
    )
    row_of = {i: r for r, i in enumerate(predicted_ids) if i is not None}
    pairs = [(row_of[k], g) for k, g in zip(keep, given, strict=True) if k in row_of]
    rows = np.array([p[0] for p in pairs], dtype=np.int64)
    values = outcomes[[p[1] for p in pairs]] if pairs else np.zeros(0)
    unmatched = [k for k in keep if k not in row_of]
    counts = {
        "labels": len(keep),
        "matched": len(pairs),
        "unmatched_labels": len(unmatched),
        "unmatched_predictions": len(named) - len(pairs),
        "empty": len(outcome_ids) - len(keep),
        "unmatched_ids": unmatched[:20],
    }
    return rows, values, counts


def _drift_block(reference: dict[str, Any] | None, table: Any, n: int, min_cell: int) -> Any:
    """``(reported, local)`` drift of every feature and the score (``None`` without a reference;
    ``reported`` withheld under ``min_cell`` rows)."""
    if reference is None:
        return None, None
    features: dict[str, Any] = {}
    for name, ref in reference["features"].items():
        column = FEATURE_PREFIX + name
        if column in table.column_names:
            features[name] = drift(ref, table[column].to_numpy(zero_copy_only=False))
    score: dict[str, Any] = {}
    if "score" in reference and "score" in table.column_names:
        score = drift(reference["score"], table["score"].to_numpy(zero_copy_only=False))
    psis = [f["psi"] for f in features.values()]
    block = {
        "features": features,
        "max_psi": max(psis) if psis else None,
        "score_psi": score.get("psi"),
        "score_noise": score.get("noise"),
    }
    return (None if 0 < n < min_cell else block), block


def _performance(
    bundle: ModelBundle, y: np.ndarray, scores: np.ndarray, rng: np.random.Generator, b: int
) -> dict[str, Any] | None:
    task = bundle.task or "binary"
    if task not in ("binary", "regression") or y.size == 0:
        return None
    spec = {"threshold": bundle.threshold, "bootstrap": b, "bins": 10, "curve_bins": 100}
    return site_summary(task, y, scores, spec=spec, rng=rng)


def run_feedback(
    folder: Path,
    labels: Path,
    *,
    id_column: str,
    label_column: str,
    rng: np.random.Generator,
    since: datetime | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    site: str | None = None,
    bootstrap: int = 200,
    now: datetime | None = None,
) -> FeedbackResult:
    """Join ``labels`` with the version folder's logged predictions and write the local result,
    ``monitoring.json`` and (when an alert fires) the proposed study; see the module docstring.

    Raises
    ------
    DataError
        No logged prediction (since ``since``), predictions without ids, a missing column,
        duplicate ids, or outcomes the task's metrics refuse.
    """
    now = now or datetime.now(timezone.utc)
    folder = Path(folder)
    bundle = load_bundle(folder / BUNDLE_DIR)
    table = read_predictions(folder, since)
    if table is None:
        after = f" since {since.isoformat()}" if since else ""
        raise DataError(f"no prediction logged in {folder}{after} (site predict --log-to)")
    if "id" not in table.column_names:
        raise DataError("the logged predictions have no ids: predict with --id-column")
    ids, outcomes = read_outcomes(labels, id_column, label_column)
    rows, y, counts = join_outcomes(table["id"].to_pylist(), ids, outcomes)
    n = table.num_rows
    score_name = "score" if "score" in table.column_names else None
    full = None
    if score_name is not None:
        scores = table[score_name].to_numpy(zero_copy_only=False)[rows]
        try:
            full = _performance(bundle, y, scores, rng, bootstrap)
        except ValidationError as err:  # outcomes the metrics refuse (not 0/1, NaN...)
            raise DataError(f"outcomes {labels} ({label_column!r}): {err}") from None
    performance = withhold_summary(full, min_cell) if full is not None else None
    reported_drift, local_drift = _drift_block(read_reference(folder), table, n, min_cell)
    predictions: dict[str, Any] = {
        "n": shown(n, min_cell),
        "runs": len(set(table["run"].to_pylist())),
    }
    if "predicted" in table.column_names and bundle.task in ("binary", None):
        positives = int(np.sum(table["predicted"].to_numpy(zero_copy_only=False)))
        fine = shown(positives, min_cell) is not None and shown(n - positives, min_cell) is not None
        predictions["positive_rate"] = round(positives / n, 6) if fine else None
    times = table["time"].to_pylist()
    version = str(bundle.description.get("source", {}).get("version") or folder.name)
    spec = thresholds_of(bundle.monitoring)
    fired = alerts(spec, performance=performance, matched=counts["matched"], drift=reported_drift)
    monitoring = {
        "version": MONITORING_VERSION,
        "model": version,
        "bundle_sha256": bundle.bundle_hash,
        "site": site,
        "time": now.isoformat(),
        "period": {"from": min(times).isoformat(), "to": max(times).isoformat()},
        "predictions": predictions,
        "outcomes": {
            "n": shown(counts["labels"], min_cell),
            "matched": shown(counts["matched"], min_cell),
            "unmatched_labels": shown(counts["unmatched_labels"], min_cell),
        },
        "performance": performance,
        "drift": reported_drift,
        "alerts": fired,
        "min_cell": min_cell,
    }
    proposal_path, note = _propose(folder, bundle, version, now.date(), fired)
    run = new_run_id(now)
    local = {
        "run": run,
        "labels": str(labels),
        "since": since.isoformat() if since else None,
        "counts": counts,
        "performance": full,
        "drift": local_drift,
        "monitoring": monitoring,
        "proposal": str(proposal_path) if proposal_path else note,
    }
    local_path = _write_json(folder / FEEDBACK_DIR / f"{run}.json", local)
    monitoring_path = _write_json(folder / MONITORING_FILE, monitoring)
    return FeedbackResult(monitoring, local, monitoring_path, local_path, proposal_path)


def _propose(
    folder: Path, bundle: ModelBundle, version: str, today: date, fired: list[dict[str, str]]
) -> tuple[Path | None, str | None]:
    if not fired:
        return None, None
    config = (bundle.card or {}).get("config")
    if not isinstance(config, dict):
        return None, "no study config in the model card: no study proposed"
    proposal = propose_update(
        config, version=version, today=today, spec=thresholds_of(bundle.monitoring)
    )
    reason = [a["detail"] for a in fired]
    return write_proposal(proposal, folder / PROPOSAL_FILE, reason=reason), None


def _write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(value, indent=2, allow_nan=False, default=str) + "\n")
    tmp.replace(path)
    return path
