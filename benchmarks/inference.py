"""Inference benchmark: ``site predict`` rows per minute per core, and ONNX parity.

Trains the heart-disease example study (``examples/heart-disease.yaml``, 20 rounds, no
baselines: logistic regression, global scaling, mean imputation) in simulation, writes its
bundle, and builds heart-disease-shaped input: ``--rows`` (default 1,000,000) rows drawn with
replacement (seeded) from the four hospitals' raw rows, missing values included, plus a
patient id column. Then, each ``--repeats`` times (default 3) after one warm-up, on one thread
(``OMP_NUM_THREADS=1``, pyarrow's CPU and I/O pools at 1):

- ``site-predict csv``: :func:`fedcare.inference.predict.predict_file` on the CSV file (read,
  check columns, frozen preprocessing, model, write predictions.csv);
- ``site-predict parquet``: the same from the Parquet file;
- ``scoring in memory``: the read excluded: frozen preprocessing, model and output columns on
  the rows already in a numpy array (no file read or written).

Rows per minute per core = rows / process CPU seconds x 60 (all threads' CPU time, so a second
core would not inflate it). Also the ONNX graph (float32 input) against ``site predict``'s
scores on the same rows: the largest absolute difference (target <= 1e-5) and onnxruntime's
rows per minute (single thread). Writes ``benchmarks/results/inference.json``. Target
(issue 15): >= 1,000,000 rows per minute per core for the logistic model.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedcare.data.registry import load_dataset
from fedcare.inference.bundle import bundle_from_study, load_bundle, write_bundle
from fedcare.inference.predict import Scorer, predict_file
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "heart-disease.yaml"
RESULTS = HERE / "results" / "inference.json"
TARGET = 1_000_000  # rows per minute per core
PARITY = 1e-5


def make_bundle(folder: Path) -> tuple[Any, np.ndarray, list[str]]:
    """The trained example model's bundle, the pooled raw rows and the feature names."""
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        baselines={"local": False, "pooled": False, "cross_site": False}
    )
    result = run_simulation(study)
    data = load_dataset(study.dataset.name, **study.dataset.options)
    files = bundle_from_study(
        study.model_dump(mode="json"),
        params=dict(result.model.params),
        task_arrays=result.model.arrays,
        feature_names=data.feature_names,
        input_shape=data.sites[0].train.input_shape,
        task=result["task"],
        card=result["model_card"],
    )
    bundle = load_bundle(write_bundle(files, folder / "bundle"))
    rows = np.concatenate([np.concatenate([s.train.X, s.test.X]) for s in data.sites])
    return bundle, rows, list(data.feature_names)


def make_input(rows: np.ndarray, names: list[str], n: int, folder: Path) -> np.ndarray:
    """``n`` rows drawn with replacement, written as rows.csv and rows.parquet; returns them."""
    X = rows[np.random.default_rng(0).integers(0, len(rows), n)]
    columns = {"patient": pa.array(np.arange(n))}
    columns.update({name: pa.array(X[:, j]) for j, name in enumerate(names)})
    table = pa.table(columns)
    pacsv.write_csv(table, folder / "rows.csv")
    pq.write_table(table, folder / "rows.parquet")
    return X


def timed(run: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """``(cpu_s, wall_s)`` of ``repeats`` runs after one warm-up."""
    run()
    out = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        out.append((time.process_time() - cpu, time.perf_counter() - wall))
    return out


def speed_row(method: str, n: int, times: list[tuple[float, float]], what: str) -> dict[str, Any]:
    rates = [n / cpu * 60 for cpu, _ in times]
    mean = statistics.mean(rates)
    verdict = "MET" if mean >= TARGET else "MISSED"
    walls = ", ".join(f"{w:.2f}" for _, w in times)
    cpus = ", ".join(f"{c:.2f}" for c, _ in times)
    by_wall = n / statistics.mean(w for _, w in times) * 60
    return {
        "benchmark": "inference",
        "dataset": "heart-disease",
        "method": method,
        "metric": "rows_per_min_per_core",
        "mean": round(mean),
        "sd": round(statistics.stdev(rates)) if len(rates) > 1 else 0,
        "n": len(rates),
        "unit": "rows/min/core",
        "notes": (
            f"{n:,} heart-disease-shaped rows (13 raw features, missing values, an id column), "
            f"logistic model (global scaling, mean imputation); {what}; one thread; CPU s per "
            f"run: {cpus}; wall s: {walls} ({by_wall:,.0f} rows/min by wall time on a shared "
            f"machine); {platform.machine()}, Python {platform.python_version()}, "
            f"load {os.getloadavg()[0]:.2f}; target >= {TARGET:,}: {verdict}"
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (>= 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedcare-inference-bench-") as tmp:
        folder = Path(tmp)
        bundle, pooled, names = make_bundle(folder)
        X = make_input(pooled, names, args.rows, folder)
        scorer = Scorer(bundle)
        for fmt in ("csv", "parquet"):
            source = folder / f"rows.{fmt}"
            times = timed(
                lambda s=source: predict_file(bundle, s, folder / "out.csv", id_column="patient"),
                args.repeats,
            )
            what = f"read from {fmt.upper()} + preprocess + score + write predictions.csv"
            rows_out.append(speed_row(f"site-predict {fmt}", args.rows, times, what))
        times = timed(lambda: scorer.output_columns(scorer(X), bundle.threshold), args.repeats)
        what = "in memory: frozen preprocessing + model + output columns (no read, no write)"
        rows_out.append(speed_row("scoring in memory", args.rows, times, what))
        rows_out.extend(onnx_rows(bundle, scorer, X, folder, args.repeats))
    print(f"{'method':<24}{'metric':<26}{'value':>16}")
    for row in rows_out:
        print(f"{row['method']:<24}{row['metric']:<26}{row['mean']:>16,}")
    write_rows(rows_out, args.out)
    return 0


def onnx_rows(
    bundle: Any, scorer: Scorer, X: np.ndarray, folder: Path, repeats: int
) -> list[dict[str, Any]]:
    """ONNX parity against ``site predict`` and onnxruntime's speed; none without the extra."""
    try:
        import onnxruntime as ort

        from fedcare.inference.onnx_export import export_onnx
    except ImportError:
        print("onnxruntime is not installed (the onnx extra): no ONNX rows")
        return []
    path = export_onnx(bundle, folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    X32 = X.astype(np.float32)
    got = session.run(["score"], {"features": X32})[0]
    diff = float(np.max(np.abs(got - scorer(X))))
    times = timed(lambda: session.run(["score", "predicted"], {"features": X32}), repeats)
    speed = speed_row("onnxruntime", len(X), times, "onnxruntime on rows in memory (float32)")
    parity = {
        "benchmark": "inference",
        "dataset": "heart-disease",
        "method": "onnx export (logistic)",
        "metric": "onnx_max_abs_diff",
        "mean": diff,
        "sd": 0,
        "n": 1,
        "unit": "probability",
        "notes": (
            f"largest |onnxruntime score - site predict score| over {len(X):,} rows (raw "
            f"features as float32, missing values imputed by the graph); target <= {PARITY:g}: "
            f"{'MET' if diff <= PARITY else 'MISSED'}"
        ),
    }
    return [parity, speed]


if __name__ == "__main__":
    raise SystemExit(main())
