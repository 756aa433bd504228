"""``fedcare site predict``: a bundle's model on new rows or images at the site; nothing leaves.

Rows come from a CSV or Parquet file and go, a chunk at a time (bounded memory), through the
bundle's frozen preprocessing and its model; the scores go to a CSV file beside them. Only
local files are read and written: no network, no coordinator.

- The input must have every feature the bundle names (a missing one is an error naming it);
  other columns are ignored and listed in the summary. Empty cells, ``NA``, ``NaN``, ``null``
  and ``?`` are missing values (imputed when the model imputes).
- Output columns: the ``id_column`` when given, then for a binary model ``score`` (the
  probability of the positive class) and ``predicted`` (1 when ``score >= threshold``); a
  survival model writes ``risk`` (its linear predictor); another model ``score`` (one column)
  or ``score_0..score_{k-1}`` and ``predicted`` (the arg max).
- The built-in linear models (``logistic``, ``sklearn``, ``cox``) are scored in numpy
  (one matrix product per chunk); a torch model through its adapter (needs the torch extra).
- A study package's model (``kind: package``) runs from the site's package store through the
  runner its training used (``packages``: a sandboxed runner process under the site policy;
  :mod:`fedcare.inference.package_scorer` checks the package first).
- A folder as input is read as DICOM images for an image model, prepared as its training
  images were (the bundle's recorded image input), one output row per image named by file
  and SOPInstanceUID; unreadable files are skipped and named
  (:mod:`fedcare.inference.predict_images`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedcare.errors import ConfigError, DataError, ModelError
from fedcare.inference.bundle import ModelBundle
from fedcare.inference.frozen import FrozenPreprocessing

if TYPE_CHECKING:
    from fedcare.inference.package_scorer import PackageBuilder

__all__ = [
    "CHUNK_ROWS",
    "PredictionSink",
    "PredictionSummary",
    "Scorer",
    "predict_file",
    "read_columns",
]

#: Rows per chunk (Parquet batches; CSV blocks hold about as many for tabular rows).
CHUNK_ROWS = 65_536
NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"]


@dataclass(frozen=True)
class PredictionSummary:
    """What one ``site predict`` run did (no row-level value)."""

    rows: int
    out: Path
    columns: list[str]
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    threshold: float | None = None
    #: The prediction log this run wrote at the site (:mod:`fedcare.inference.monitor`).
    log: Path | None = None
    #: DICOM input: ``{"file", "reason"}`` of each file that could not be scored.
    skipped: list[dict[str, str]] = field(default_factory=list)


class PredictionSink(Protocol):
    """Where a run also keeps its predictions at the site (a
    :class:`fedcare.inference.monitor.PredictionLog`)."""

    def write(self, ids: Any, outputs: dict[str, np.ndarray], X_raw: np.ndarray) -> None:
        """Append a chunk: ids (or ``None``), the output columns, the raw rows."""

    def close(self) -> Path | None:
        """Finish; the file written (``None`` when empty)."""

    def abort(self) -> None:
        """Drop what was written (the run failed)."""


class Scorer:
    """A bundle's frozen preprocessing and model as one function of raw rows."""

    def __init__(self, bundle: ModelBundle, packages: PackageBuilder | None = None) -> None:
        if bundle.missing:
            raise ConfigError(
                f"the bundle cannot be used for prediction: it lacks {', '.join(bundle.missing)}"
            )
        self.bundle = bundle
        self.task = bundle.task or "binary"
        self.prep: FrozenPreprocessing = bundle.preprocessing()
        kind = bundle.model.get("kind")
        params = bundle.params
        self._model: Callable[[np.ndarray], np.ndarray]
        if kind in ("logistic", "sklearn", "cox"):
            w = np.asarray(params["weight"], dtype=np.float64)
            b = float(params["bias"]) if "bias" in params else 0.0
            if w.shape != (int(np.prod(bundle.input_shape)),):
                raise ModelError(
                    f"weight has shape {w.shape}, the bundle's input {bundle.input_shape}"
                )
            self._model = self._linear(w, b, logistic=kind != "cox")
        elif kind == "package":
            from fedcare.inference.package_scorer import package_model

            self._model = package_model(bundle.model, params, packages)
        else:
            from fedcare.models.registry import build_model
            from fedcare.records.arrays import ArrayRecord

            adapter, record = build_model(bundle.model), ArrayRecord(dict(params))
            self._model = lambda X: np.asarray(adapter.predict(record, X), dtype=np.float64)

    @staticmethod
    def _linear(w: np.ndarray, b: float, *, logistic: bool) -> Callable[[np.ndarray], np.ndarray]:
        from scipy.special import expit

        def score(X: np.ndarray) -> np.ndarray:
            z = X @ w
            z += b
            return np.asarray(expit(z, out=z) if logistic else z)

        return score

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Scores of raw rows ``X`` (features in the bundle's order)."""
        return self._model(self.prep.apply(X))

    def score_inputs(self, X: np.ndarray) -> np.ndarray:
        """Scores of inputs already prepared as the model takes them (images)."""
        return self._model(X)

    def output_columns(self, scores: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
        """The output columns for ``scores`` (see the module docstring)."""
        if self.task == "survival":
            return {"risk": scores}
        if scores.ndim == 1:
            out = {"score": scores}
            if self.task == "binary":
                out["predicted"] = (scores >= threshold).astype(np.int8)
            return out
        out = {f"score_{i}": scores[:, i] for i in range(scores.shape[1])}
        out["predicted"] = np.argmax(scores, axis=1).astype(np.int64)
        return out


def read_columns(path: Path) -> list[str]:
    """The column names of a CSV (its header line) or Parquet file."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def _batches(path: Path, columns: list[str], features: list[str]) -> Iterator[Any]:
    import pyarrow as pa

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns)
        return
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={f: pa.float64() for f in features},
        null_values=NULL_VALUES,
        strings_can_be_null=True,
    )
    read = pacsv.ReadOptions(block_size=4 << 20)
    yield from pacsv.open_csv(path, read_options=read, convert_options=convert)


def _matrix(batch: Any, features: list[str]) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    X = np.empty((batch.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        column = batch.column(name)
        if column.type != pa.float64():
            try:
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataError(f"column {name!r} is not numeric ({column.type}): {err}") from None
        X[:, j] = column.to_numpy(zero_copy_only=False)
    return X


def _name_column(message: str, columns: list[str]) -> str:
    """pyarrow's ``In CSV column #3: ...`` with the column's name."""
    import re

    found = re.search(r"CSV column #(\d+)", message)
    if found is None or int(found.group(1)) >= len(columns):
        return message
    return message.replace(found.group(0), f"column {columns[int(found.group(1))]!r}")


def predict_file(
    bundle: ModelBundle,
    input_path: Path,
    out: Path,
    *,
    threshold: float | None = None,
    id_column: str | None = None,
    log: PredictionSink | None = None,
    packages: PackageBuilder | None = None,
) -> PredictionSummary:
    """Score every row of ``input_path`` and write ``out`` (CSV); see the module docstring.

    ``log``: also keep the predictions, with the ids and raw feature values, in this prediction
    log at the site (closed here; nothing is written to it when the run fails). ``packages``:
    how a study package's model runs (:mod:`fedcare.inference.package_scorer`). A folder
    ``input_path`` is read as DICOM images (:mod:`fedcare.inference.predict_images`).

    Raises
    ------
    DataError
        The input lacks a feature (names it) or the id column, a feature is not numeric, or
        the file cannot be read.
    ConfigError
        The bundle cannot be used for prediction (names what it lacks), a bad threshold or an
        input format other than CSV or Parquet.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    start = time.perf_counter()
    input_path, out = Path(input_path), Path(out)
    if not input_path.is_dir() and input_path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"input {input_path}: expected a .csv or .parquet file or a DICOM folder")
    cut = bundle.threshold if threshold is None else float(threshold)
    if not 0 < cut < 1:
        raise ConfigError(f"threshold must be in (0, 1), got {cut}")
    if input_path.is_dir():
        from fedcare.inference.predict_images import bundle_image_input, predict_dicom_folder

        if id_column is not None:
            raise ConfigError("--id-column applies to a table; DICOM rows are named by file")
        bundle_image_input(dict(bundle.description), bundle.input_shape)  # before the model
        scorer = Scorer(bundle, packages)
        run = predict_dicom_folder(scorer, input_path, out, cut, log)
        binary = scorer.task == "binary"
        seconds = time.perf_counter() - start
        return PredictionSummary(run.rows, out, run.columns, [], seconds,
                                 cut if binary else None, run.log, skipped=run.skipped)  # fmt: skip
    if len(bundle.input_shape) == 3:
        raise ConfigError(f"the model takes images {list(bundle.input_shape)}: give a DICOM folder")
    scorer = Scorer(bundle, packages)
    features = bundle.features
    try:
        present = read_columns(input_path)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {input_path}: {err}") from None
    absent = [f for f in features if f not in present]
    if absent:
        more = f" (and {len(absent) - 1} more: {absent[1:]})" if len(absent) > 1 else ""
        raise DataError(f"input {input_path} has no column {absent[0]!r}{more}: the model needs it")
    if id_column is not None and id_column not in present:
        raise DataError(f"input {input_path} has no id column {id_column!r}")
    wanted = ([id_column] if id_column else []) + features
    ignored = [c for c in present if c not in wanted]
    rows, names, writer = 0, [], None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for batch in _batches(input_path, wanted, features):
            X = _matrix(batch, features)
            scores = scorer(X)
            columns = scorer.output_columns(scores, cut)
            if log is not None:
                log.write(batch.column(id_column) if id_column else None, columns, X)
            arrays = ([batch.column(id_column)] if id_column else []) + [
                pa.array(v) for v in columns.values()
            ]
            names = ([id_column] if id_column else []) + list(columns)
            table = pa.Table.from_arrays(arrays, names=names)
            if writer is None:
                writer = pacsv.CSVWriter(str(out), table.schema)
            writer.write_table(table)
            rows += batch.num_rows
    except pa.ArrowInvalid as err:
        if log is not None:
            log.abort()
        raise DataError(f"cannot read {input_path}: {_name_column(str(err), present)}") from None
    except BaseException:
        if log is not None:
            log.abort()
        raise
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no row: still a file with its header
        names = ([id_column] if id_column else []) + list(scorer.output_columns(np.zeros(0), cut))
        out.write_text(",".join(f'"{n}"' for n in names) + "\n")
    binary = scorer.task == "binary"
    logged = log.close() if log is not None else None
    return PredictionSummary(
        rows, out, names, ignored, time.perf_counter() - start, cut if binary else None, logged
    )
