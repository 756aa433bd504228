"""What a site keeps of a deployed model's use: its prediction log and reference statistics.

Everything here stays at the site, in the model's *version folder* (the site's model store,
``<site state>/models/<version>/``, or any folder laid out the same way)::

    bundle/...                  the verified bundle
    reference.json              per-feature reference histograms of this site's training rows
                                (and of the model's scores on them), frozen when the model is
                                taken (:func:`write_reference`)
    predictions/<run>.parquet   one file per ``site predict`` run (:class:`PredictionLog`):
                                ``id`` (when the input had one), the output columns (``score``,
                                ``predicted``, ``risk``...), ``run``, ``time`` and the raw
                                feature values as ``feature:<name>``
    feedback/<run>.json         each ``site feedback`` run's local result (never sent)
    monitoring.json             the latest aggregate summary (what MAY be sent)

:func:`version_folder` finds a version in the store; the store itself
(``fedcare.inference.store``) may replace it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import DataError, FedcareError, NotFoundError, ValidationError
from fedcare.inference.bundle import ModelBundle, load_bundle, write_bundle
from fedcare.inference.drift import feature_reference, freeze_reference

__all__ = [
    "BUNDLE_DIR",
    "FEATURE_PREFIX",
    "MONITORING_FILE",
    "REFERENCE_FILE",
    "PredictionLog",
    "default_log_folder",
    "log_predictions",
    "new_run_id",
    "open_log_folder",
    "read_predictions",
    "read_reference",
    "resolve_model",
    "version_folder",
    "write_reference",
]

BUNDLE_DIR, REFERENCE_FILE, MONITORING_FILE = "bundle", "reference.json", "monitoring.json"
PREDICTIONS_DIR, FEEDBACK_DIR = "predictions", "feedback"
#: Raw feature columns of a prediction log are named ``feature:<name>``.
FEATURE_PREFIX = "feature:"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by time: ``20261205T021500Z-1a2b3c``."""
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{when:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def version_folder(store_root: Path, version: str) -> Path:
    """The folder of ``version`` in the site's model store at ``store_root``
    (:meth:`fedcare.inference.store.ModelStore.path`).

    Raises
    ------
    NotFoundError
        If ``version`` is not a version name or the store does not hold it (names it).
    """
    from fedcare.inference.store import ModelStore

    return ModelStore(Path(store_root)).path(version)


def resolve_model(model: str, state: Path) -> Path:
    """The version folder ``--model`` names: a folder holding ``bundle/``, else a version in
    the store ``<state>/models``."""
    path = Path(model)
    if path.is_dir():
        if (path / BUNDLE_DIR).is_dir():
            return path
        raise NotFoundError(
            f"{path} has no {BUNDLE_DIR}/ folder: give a model version, or the folder that "
            "`site predict --log-to` wrote"
        )
    return version_folder(Path(state) / "models", model)


def default_log_folder(model: Path) -> Path | None:
    """Where ``site predict`` logs by default: the version folder when ``model`` is a version
    folder's ``bundle/`` (a model of the site's store), else nowhere."""
    model = Path(model)
    if model.name == BUNDLE_DIR and model.is_dir():
        return model.parent
    if (model / BUNDLE_DIR).is_dir():
        return model
    return None


def open_log_folder(folder: Path, bundle: ModelBundle) -> Path:
    """Make ``folder`` a version folder of ``bundle`` (its files copied to ``bundle/`` when the
    folder has none); refuse a folder that holds another model's bundle."""
    folder = Path(folder)
    if (folder / BUNDLE_DIR).is_dir():
        kept = load_bundle(folder / BUNDLE_DIR)
        if kept.bundle_hash != bundle.bundle_hash:
            raise ValidationError(
                f"{folder} logs the predictions of another model ({kept.bundle_hash}); this "
                f"one is {bundle.bundle_hash}: log to another folder"
            )
        return folder
    write_bundle(bundle.files, folder / BUNDLE_DIR)
    return folder


class PredictionLog:
    """One run's prediction log, written a chunk at a time (atomically: the file appears when
    :meth:`close` succeeds)."""

    def __init__(self, folder: Path, run_id: str, feature_names: Sequence[str]) -> None:
        if not _VERSION.fullmatch(run_id):
            raise ValidationError(f"{run_id!r} is not a run id")
        self.path = Path(folder) / PREDICTIONS_DIR / f"{run_id}.parquet"
        if self.path.exists():
            raise ValidationError(f"prediction log {self.path} exists already")
        self.run_id, self.features = run_id, [str(f) for f in feature_names]
        self.time = datetime.now(timezone.utc)
        self.rows = 0
        self._partial = self.path.with_suffix(".partial")
        self._writer: Any = None

    def write(self, ids: Any, outputs: Mapping[str, np.ndarray], X_raw: np.ndarray) -> None:
        """Append rows: ``ids`` (a sequence or arrow array, or ``None``), the output columns and
        the raw feature matrix (features in the order given)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        X = np.asarray(X_raw, dtype=np.float64)
        n = X.shape[0]
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValidationError(f"raw rows of shape {X.shape}, {len(self.features)} features")
        columns: dict[str, Any] = {}
        if ids is not None:
            array = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids))
            columns["id"] = array.cast(pa.string())
        columns.update({k: pa.array(np.asarray(v)) for k, v in outputs.items()})
        columns["run"] = pa.array([self.run_id] * n, pa.string())
        columns["time"] = pa.array([self.time] * n, pa.timestamp("us", tz="UTC"))
        for j, name in enumerate(self.features):
            columns[FEATURE_PREFIX + name] = pa.array(X[:, j])
        lengths = {len(v) for v in columns.values()}
        if lengths != {n}:
            raise ValidationError(f"prediction log columns of lengths {sorted(lengths)}")
        table = pa.table(columns)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._partial, table.schema)
        self._writer.write_table(table)
        self.rows += n

    def close(self) -> Path | None:
        """Finish the file (``None`` when no row was written)."""
        if self._writer is None:
            return None
        self._writer.close()
        self._partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop a partial file (the run failed)."""
        if self._writer is not None:
            self._writer.close()
            self._partial.unlink(missing_ok=True)
            self._writer = None


def log_predictions(
    folder: Path,
    run_id: str,
    ids: Sequence[Any] | None,
    scores: Any,
    predicted: Any,
    raw_features: Mapping[str, Any],
) -> Path:
    """Keep one run's predictions at the site: ``folder/predictions/<run_id>.parquet``.

    Parameters
    ----------
    folder:
        The model's version folder.
    ids:
        Row ids (patients, encounters) or ``None``; feedback joins outcomes on them.
    scores:
        ``(n,)`` (column ``score``) or ``(n, k)`` (``score_0..``).
    predicted:
        ``(n,)`` decisions or classes, or ``None``.
    raw_features:
        Feature name -> ``(n,)`` raw values (before imputation and scaling; ``NaN`` missing).
    """
    s = np.asarray(scores, dtype=np.float64)
    outputs = {"score": s} if s.ndim == 1 else {f"score_{i}": s[:, i] for i in range(s.shape[1])}
    if predicted is not None:
        outputs["predicted"] = np.asarray(predicted)
    names = list(raw_features)
    X = np.column_stack([np.asarray(raw_features[f], dtype=np.float64) for f in names])
    log = PredictionLog(folder, run_id, names)
    try:
        log.write(ids, outputs, X.reshape(s.shape[0], len(names)))
    except BaseException:
        log.abort()
        raise
    path = log.close()
    if path is None:
        raise ValidationError("no prediction to log")
    return path


def read_predictions(folder: Path, since: datetime | None = None) -> Any:
    """Every logged prediction of the version folder (a ``pyarrow.Table``), those of runs at or
    after ``since`` when given; ``None`` when there is none."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / PREDICTIONS_DIR).glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    if not tables:
        return None
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as err:
        raise DataError(f"the prediction logs in {folder} do not fit together: {err}") from None
    if since is not None:
        when = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        table = table.filter(pc.greater_equal(table["time"], pa.scalar(when, table["time"].type)))
    return table if table.num_rows else None


def write_reference(folder: Path, bundle: ModelBundle, train_X_raw: Any, *, bins: int = 10) -> Path:
    """Freeze this site's reference statistics of ``bundle``'s features (its raw training rows,
    features in the bundle's order) into ``folder/reference.json``, with the histogram of the
    model's scores on those rows when the model can score them here (binary and regression)."""
    from fedcare.inference.predict import Scorer

    reference = freeze_reference(train_X_raw, bundle.features, bins)
    try:
        scores = Scorer(bundle)(np.asarray(train_X_raw, dtype=np.float64))
    except FedcareError:
        scores = None
    if scores is not None and scores.ndim == 1 and bundle.task in ("binary", "regression", None):
        reference["score"] = feature_reference(scores, bins)
    reference["bundle_sha256"] = bundle.bundle_hash
    path = Path(folder) / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(reference, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_reference(folder: Path) -> dict[str, Any] | None:
    """The version folder's reference statistics, ``None`` when it has none."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except ValueError as err:
        raise ValidationError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict) or not isinstance(value.get("features"), dict):
        raise ValidationError(f"{path} is not a reference (no 'features')")
    return value
