"""System benchmark: round time and effective throughput, gRPC grid vs in-memory grid.

For each model size (a torch ``mlp`` on the 10 features of the ``synthetic`` dataset whose
hidden widths give about 1M, 30M and 100M float32 parameters) the same study runs twice:
FedAvg over 4 sites, one local SGD step on a batch of 8 rows per round, no evaluation rounds
(``evaluate_every: 0``), so a round is training, transport and aggregation only.

* **inmemory**: ``train_on_grid(grid_for(sites), ...)`` in this process (sites run one after
  the other; tasks and replies are passed as objects: nothing is serialized).
* **grpc**: a real federation on 127.0.0.1, one coordinator process and 4 site-agent
  processes over mutual TLS (see ``system_federation.py``); round times are the coordinator's
  stored ``duration_s``.

Round 1 of a gRPC run includes starting each site's task worker (a fresh process that imports
torch and loads the data), so the medians use rounds 2..R of both grids; round 1 is reported
on its own. Effective throughput is the bytes a round moves, ``4 sites x (task parameters down
+ update up) x 4 bytes``, divided by the median round time, in MB/s (10^6 bytes); for the
in-memory grid it is nominal (nothing is copied).

Memory: a gRPC federation on one machine holds many copies of the model (see
``GRPC_BYTES_PER_PARAM``). A gRPC run whose estimated memory does not fit in what the machine
has available is skipped (``--force`` runs it anyway); a running federation is stopped when
the machine's available memory falls below ``system_federation.MIN_AVAILABLE_MB``, and the
rounds completed until then are reported. Writes ``benchmarks/results/system.json`` (the
median goes in ``mean``; ``notes`` says so and gives the parameter count and machine load).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcare.data.synthetic import load_synthetic
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, train_on_grid
from results_file import write_rows
from system_federation import mem_available_mb, run_federation

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "system.json"
NUM_SITES = 4
N_FEATURES = 10
BYTES_PER_PARAM = 4  # float32
#: Peak resident memory of a 4-site gRPC federation on one machine (coordinator, agents and
#: task workers together), measured: 4.0 GB at 1.0M parameters, 8.6 GB at 30.3M, 21.4 GB at
#: 100.1M (about 46 float32 copies of the model, plus the processes' own 3.1 GB).
GRPC_BASE_MB = 3100.0
GRPC_BYTES_PER_PARAM = 183.0
#: Memory left to the machine's other jobs when deciding whether a gRPC run fits.
MEMORY_MARGIN_MB = 3000.0

Row = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """A model size: the MLP's hidden widths and the default number of rounds."""

    hidden: tuple[int, ...]
    rounds: int


SIZES: dict[str, Size] = {
    "10k": Size((833,), 4),  # --quick
    "1M": Size((83_333,), 6),
    "10M": Size((3_000, 3_000), 4),
    "30M": Size((5_500, 5_500), 4),
    "100M": Size((10_000, 10_000), 4),
}
DEFAULT_SIZES = ("1M", "30M", "100M")


def param_count(hidden: Sequence[int], n_in: int = N_FEATURES) -> int:
    """Parameters of ``mlp`` (weights and biases of each hidden layer and the output)."""
    total, width = 0, n_in
    for out in [*hidden, 1]:
        total += width * out + out
        width = out
    return total


def grpc_memory_estimate_mb(params: int) -> float:
    """Estimated peak memory of a 4-site gRPC federation on this machine."""
    return GRPC_BASE_MB + GRPC_BYTES_PER_PARAM * params / 1e6


def study_for(label: str, size: Size, rounds: int) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "name": f"system-{label}",
            "dataset": {"name": "synthetic"},
            "model": {"kind": "torch", "architecture": "mlp", "hidden": list(size.hidden)},
            "training": {"max_steps": 1, "batch_size": 8, "optimizer": "sgd", "lr": 0.01},
            "strategy": {"name": "fedavg"},
            "rounds": rounds,
            "min_sites": NUM_SITES,
            "evaluate_every": 0,
            "round_timeout": 600.0,
            "seed": 0,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        },
        source=f"system benchmark study {label}",
    )


@dataclass(frozen=True)
class GridRun:
    """Round times of one run on one grid, and what else it measured."""

    method: str
    durations: list[float]
    peak_rss_mb: float | None = None
    rss_what: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    status: str = "completed"


def run_inmemory(study: StudyConfig) -> GridRun:
    sites = list(load_synthetic(num_sites=NUM_SITES, n_features=N_FEATURES).sites)
    start = time.perf_counter()
    model = train_on_grid(grid_for(sites), study, (N_FEATURES,), label="federated")
    wall = time.perf_counter() - start
    return GridRun(
        "inmemory",
        [r.duration_s for r in model.history],
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        "benchmark process, peak so far (sizes run smallest first)",
        {"study_wall_s": wall},
    )


def run_grpc(study: StudyConfig, keep: bool) -> GridRun:
    root = Path(tempfile.mkdtemp(prefix="fedcare-system-"))
    try:
        sites = [f"site-{k}" for k in range(NUM_SITES)]
        fed = run_federation(study, sites, root, limit_s=1200.0)
    finally:
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    extra = {
        "study_wall_s": fed.wall_s,
        "site_peak_rss_mb": fed.site_rss_mb,
        "federation_peak_rss_mb": fed.total_rss_mb,
        "min_mem_available_mb": fed.min_available_mb,
    }
    if len(fed.completed_gaps) > 1:
        extra["round_wall_s"] = statistics.median(fed.completed_gaps[1:])
    rss_what = "coordinator process (VmHWM)"
    return GridRun("grpc", fed.durations, fed.coordinator_rss_mb, rss_what, extra, fed.status)


# Rows -----------------------------------------------------------------------------------------
def _row(
    method: str, metric: str, value: float | None, sd: float, n: int, unit: str, notes: str
) -> Row:
    return {
        "benchmark": "system",
        "dataset": "synthetic",
        "method": method,
        "metric": metric,
        "mean": None if value is None else round(value, 6),
        "sd": round(sd, 6),
        "n": n,
        "unit": unit,
        "notes": notes,
    }


EXTRA_NOTES = {
    "study_wall_s": ("s", "submit (or train_on_grid call) to completion, round 0 included"),
    "round_wall_s": (
        "s",
        "median gap between stored completion times of rounds 3..R: a round plus "
        "checkpointing it (params and strategy state written as artifacts)",
    ),
    "site_peak_rss_mb": ("MB", "largest peak resident memory of one site (agent + worker)"),
    "federation_peak_rss_mb": (
        "MB",
        "peak of the summed resident memory of coordinator, agents and workers (sampled "
        "every 0.2 s)",
    ),
    "min_mem_available_mb": ("MB", "least MemAvailable of the machine during the run"),
}


def timing_rows(label: str, params: int, run: GridRun, base: str) -> list[Row]:
    """Median round time (rounds 2..R), throughput and round 1 of one run."""
    steady = run.durations[1:]
    word, _, reason = run.status.partition(":")
    status = "" if run.status == "completed" else f"{word.upper()}:{reason}; "
    moved = NUM_SITES * 2 * params * BYTES_PER_PARAM
    median = statistics.median(steady) if steady else None
    sd = statistics.stdev(steady) if len(steady) > 1 else 0.0
    every = ", ".join(f"{d:.3f}" for d in run.durations)
    if not run.durations:
        return [
            _row(run.method, f"{metric}@{label}", None, 0.0, 0, unit, f"{status}{base}")
            for metric, unit in (("round_time_s", "s"), ("throughput_mb_s", "MB/s"))
        ]
    nominal = "; nominal: the in-memory grid copies nothing" if run.method == "inmemory" else ""
    workers = " (includes starting the 4 site task workers)" if run.method == "grpc" else ""
    return [
        _row(run.method, f"round_time_s@{label}", median, sd, len(steady), "s",
             f"{status}median (in 'mean') of rounds 2..{len(run.durations)}; all rounds: "
             f"{every} s; {base}"),
        _row(run.method, f"throughput_mb_s@{label}", median and moved / median / 1e6,
             moved * sd / median**2 / 1e6 if median else 0.0, len(steady), "MB/s",
             f"{status}{moved / 1e6:,.1f} MB per round ({NUM_SITES} x (task down + update "
             f"up)) / median round time; SD by the delta method{nominal}; {base}"),
        _row(run.method, f"first_round_s@{label}", run.durations[0] if run.durations else None,
             0.0, min(1, len(run.durations)), "s", f"{status}round 1 alone{workers}; {base}"),
    ]  # fmt: skip


def memory_rows(label: str, run: GridRun, base: str) -> list[Row]:
    """Peak memory and the other measurements of one run."""
    if run.peak_rss_mb is None:
        return []
    rows = [
        _row(run.method, f"peak_rss_mb@{label}", run.peak_rss_mb, 0.0, 1, "MB",
             f"peak resident memory of the {run.rss_what}; {base}"),
    ]  # fmt: skip
    for key, value in run.extra.items():
        unit, note = EXTRA_NOTES[key]
        rows.append(_row(run.method, f"{key}@{label}", value, 0.0, 1, unit, f"{note}; {base}"))
    return rows


def ratio_row(label: str, params: int, grpc: GridRun, inmem: GridRun) -> Row | None:
    if len(grpc.durations) < 2 or len(inmem.durations) < 2:
        return None
    g, i = statistics.median(grpc.durations[1:]), statistics.median(inmem.durations[1:])
    return _row(
        "grpc", f"round_time_ratio@{label}", g / i, 0.0, 1, "x",
        f"median gRPC round time / median in-memory round time ({g:.3f} / {i:.3f} s); "
        f"{params:,} parameters",
    )  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: Sequence[Row], labels: Sequence[str]) -> None:
    cells = {(r["method"], r["metric"]): r["mean"] for r in rows}
    notes = {(r["method"], r["metric"]): r["notes"] for r in rows}
    print(f"\n{'size':>6} {'grid':>9} {'round s':>9} {'MB/s':>8} {'ratio':>6} {'round 1 s':>9} "
          f"{'peak MB':>8}  status")  # fmt: skip
    for label in labels:
        for method in ("inmemory", "grpc"):
            key = (method, f"round_time_s@{label}")
            if key not in notes:
                continue
            v = {m: cells.get((method, f"{m}@{label}")) for m in (
                "round_time_s", "throughput_mb_s", "round_time_ratio", "first_round_s",
                "peak_rss_mb")}  # fmt: skip
            status = notes[key].split("; ")[0] if notes[key][:1].isupper() else "completed"
            print(f"{label:>6} {method:>9} {_fmt(v['round_time_s'], '9.3f'):>9} "
                  f"{_fmt(v['throughput_mb_s'], '8.1f'):>8} "
                  f"{_fmt(v['round_time_ratio'], '6.1f') if method == 'grpc' else '':>6} "
                  f"{_fmt(v['first_round_s'], '9.3f'):>9} {_fmt(v['peak_rss_mb'], '8.0f'):>8}"
                  f"  {status[:100]}")  # fmt: skip


# Driver ---------------------------------------------------------------------------------------
def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} cores"


def _run_grid(grid: str, study: StudyConfig, params: int, args: argparse.Namespace) -> GridRun:
    if grid == "inmemory":
        return run_inmemory(study)
    need, have = grpc_memory_estimate_mb(params), mem_available_mb()
    if need > have - MEMORY_MARGIN_MB and not args.force:
        reason = (
            f"skipped: a 4-site gRPC federation of this model needs about {need / 1e3:.1f} GB; "
            f"this machine has {have / 1e3:.1f} GB available and keeps "
            f"{MEMORY_MARGIN_MB / 1e3:.0f} GB for other jobs (--force runs it anyway)"
        )
        return GridRun("grpc", [], status=reason)
    return run_grpc(study, args.keep)


def run_size(label: str, args: argparse.Namespace, machine: str) -> list[Row]:
    """Both grids for one model size: their rows and the ratio row."""
    size = SIZES[label]
    params = param_count(size.hidden)
    study = study_for(label, size, args.rounds or size.rounds)
    print(f"{label}: mlp hidden {list(size.hidden)}, {params:,} parameters, "
          f"{study.rounds} rounds; {_load()}", flush=True)  # fmt: skip
    rows: list[Row] = []
    runs: dict[str, GridRun] = {}
    for grid in args.grids.split(","):
        t0 = time.perf_counter()
        run = runs[grid] = _run_grid(grid.strip(), study, params, args)
        print(f"  {grid}: rounds {[round(d, 3) for d in run.durations]} s, {run.status[:300]} "
              f"({time.perf_counter() - t0:.1f} s; {_load()})", flush=True)  # fmt: skip
        base = (
            f"{label} model: mlp {list(size.hidden)} on {N_FEATURES} features, {params:,} "
            f"float32 parameters; {NUM_SITES} sites, FedAvg, 1 SGD step (batch 8), no "
            f"evaluation rounds; {machine}, {_load()} at the end of the run"
        )
        rows += timing_rows(label, params, run, base) + memory_rows(label, run, base)
    if "grpc" in runs and "inmemory" in runs:
        ratio = ratio_row(label, params, runs["grpc"], runs["inmemory"])
        rows += [ratio] if ratio else []
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                        help=f"comma-separated, of {', '.join(SIZES)}")  # fmt: skip
    parser.add_argument("--rounds", type=int, help="rounds per run (>= 3; default per size)")
    parser.add_argument("--quick", action="store_true", help="smoke test: the 10k model only")
    parser.add_argument("--grids", default="inmemory,grpc", help="inmemory, grpc or both")
    parser.add_argument("--force", action="store_true", help="run gRPC even if memory is short")
    parser.add_argument("--keep", action="store_true", help="keep the federation folders")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    labels = ["10k"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown or (args.rounds is not None and args.rounds < 3):
        parser.error(f"unknown sizes {unknown}" if unknown else "--rounds must be at least 3")
    if not set(args.grids.split(",")) <= {"inmemory", "grpc"}:
        parser.error(f"--grids must name inmemory and/or grpc, got {args.grids!r}")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    started = time.perf_counter()
    rows = [row for label in labels for row in run_size(label, args, machine)]
    print_table(rows, labels)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {_load()}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
