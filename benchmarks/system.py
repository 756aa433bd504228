"""System benchmark: round time, throughput and memory, gRPC grid vs in-memory grid; resume.

For each model size (a torch ``mlp`` on the 10 features of the ``synthetic`` dataset whose
hidden widths give about 1M, 10M, 30M, 100M and 1B float32 parameters) the same study runs on
each grid: FedAvg over 4 sites (2 at 1B), one local SGD step on a batch of 8 rows per round,
no evaluation rounds (``evaluate_every: 0``), so a round is training, transport and
aggregation only.

* **inmemory**: ``train_on_grid(grid_for(sites), ...)`` in this process (sites run one after
  the other; tasks and replies are passed as objects: nothing is serialized).
* **grpc**: a real federation on 127.0.0.1, one coordinator process and one site-agent
  process per site over mutual TLS (see ``system_federation.py``); round times are the
  coordinator's stored ``duration_s``.

Round 1 of a gRPC run includes starting each site's task worker (a fresh process that imports
torch and loads the data), so the medians use rounds 2..R of both grids; round 1 is reported
on its own. Effective throughput is the bytes a round moves, ``sites x (task parameters down
+ update up) x 4 bytes``, divided by the median round time, in MB/s (10^6 bytes); for the
in-memory grid it is nominal (nothing is copied).

Memory of a gRPC run (``process_memory.py``; every process tree read from ``/proc`` every
0.2 s and once more before the federation stops): ``peak_rss_mb`` is the coordinator
process's own peak (``VmHWM``); ``site_peak_rss_mb`` the largest over sites of the sum of the
site's processes' own peaks (agent, task worker, helpers: an upper bound of the site's peak;
the notes give each site's breakdown and its polled peak, a lower bound); ``agent_peak_rss_mb``
and ``worker_peak_rss_mb`` the largest agent and worker; ``federation_peak_rss_mb`` the polled
peak of the summed resident memory of all processes (a lower bound; the notes give the sum of
all peaks, the upper bound), ``federation_peak_anon_mb`` that of the anonymous part and
``federation_peak_pss_mb`` that of the proportional set size (shared pages counted once).

A run whose estimated memory (``system_estimate.py``: per process, a base plus model copies)
does not fit in what the machine has available is refused, with the estimate printed
(``--force`` runs it anyway); a running federation is stopped when the machine's available
memory falls below ``system_federation.MIN_AVAILABLE_MB``, and the rounds completed until then
are reported. ``--resume`` adds the resume measurement (``system_resume.py``: a transfer cut
at half the model through a byte-counting proxy; rows ``resume_bytes_ratio@<size>``,
``resume_download_bytes_ratio@<size>``).

Rows go into ``benchmarks/results/system.json``: each replaces the stored row of its method
and metric, the other stored rows stay (``system_rows.merge_rows``; ``--replace`` writes only
this run's rows). The median goes in ``mean``; ``notes`` says so and gives the parameter count
and machine load, and the issue-16 target verdicts where one applies.

Run: ``python benchmarks/system.py`` (1M, 30M, 100M), ``--sizes 100M --grids grpc``,
``--sizes 1B`` (gRPC only, 2 sites), ``--sizes 100M --grids none --resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedcare.data.synthetic import load_synthetic
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, train_on_grid
from process_memory import mem_available_mb
from results_file import write_rows
from system_estimate import (
    PROFILES,
    Copies,
    Estimate,
    grpc_estimate,
    inmemory_estimate,
    parse_copies,
)
from system_federation import FederationRun, run_federation
from system_resume import DIRECTIONS, resume_rows
from system_rows import (
    GridRun,
    Row,
    memory_rows,
    merge_rows,
    print_table,
    ratio_row,
    timing_rows,
    with_verdicts,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "system.json"
N_FEATURES = 10
#: Memory left to the machine's other jobs when deciding whether a run fits.
MEMORY_MARGIN_MB = 3000.0


@dataclass(frozen=True)
class Size:
    """A model size: the MLP's hidden widths, the default rounds, sites and grids."""

    hidden: tuple[int, ...]
    rounds: int
    sites: int = 4
    grids: tuple[str, ...] = ("inmemory", "grpc")


SIZES: dict[str, Size] = {
    "10k": Size((833,), 4),  # --quick
    "1M": Size((83_333,), 6),
    "10M": Size((3_000, 3_000), 4),
    "30M": Size((5_500, 5_500), 4),
    "100M": Size((10_000, 10_000), 4),
    # 1,000,045,711 parameters (4.0 GB); see system_estimate.py for what each process holds
    "1B": Size((31_617, 31_617), 2, sites=2, grids=("grpc",)),
}
DEFAULT_SIZES = ("1M", "30M", "100M")


def param_count(hidden: Sequence[int], n_in: int = N_FEATURES) -> int:
    """Parameters of ``mlp`` (weights and biases of each hidden layer and the output)."""
    total, width = 0, n_in
    for out in [*hidden, 1]:
        total += width * out + out
        width = out
    return total


def transfer_s(params: int, sites: int) -> float:
    """Seconds a round's transfers take at a slow 20 MB/s, twice over (a 1B round with 2 sites
    moves 16 GB: 1,600 s)."""
    return 2 * sites * 2 * params * 4 / 20e6


def study_for(label: str, size: Size, rounds: int, sites: int) -> StudyConfig:
    timeout = max(600.0, transfer_s(param_count(size.hidden), sites))  # the round deadline
    return StudyConfig.from_dict(
        {
            "name": f"system-{label}",
            "dataset": {"name": "synthetic"},
            "model": {"kind": "torch", "architecture": "mlp", "hidden": list(size.hidden)},
            "training": {"max_steps": 1, "batch_size": 8, "optimizer": "sgd", "lr": 0.01},
            "strategy": {"name": "fedavg"},
            "rounds": rounds,
            "min_sites": sites,
            "evaluate_every": 0,
            "round_timeout": timeout,
            "seed": 0,
            "baselines": {"local": False, "pooled": False, "cross_site": False},
        },
        source=f"system benchmark study {label}",
    )


def run_inmemory(study: StudyConfig, sites: int) -> GridRun:
    data = list(load_synthetic(num_sites=sites, n_features=N_FEATURES).sites)
    start = time.perf_counter()
    model = train_on_grid(grid_for(data), study, (N_FEATURES,), label="federated")
    wall = time.perf_counter() - start
    return GridRun(
        "inmemory",
        [r.duration_s for r in model.history],
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        "benchmark process, peak so far (sizes run smallest first)",
        {"study_wall_s": wall},
    )


def grpc_memory(fed: FederationRun) -> tuple[dict[str, float], dict[str, str]]:
    """The memory figures of a gRPC run (module docstring) and what their notes add."""
    watch = fed.memory
    sites = [watch.peak(s) for s in fed.sites]
    worst = max(sites, key=lambda g: g.sum_of_peaks_mb)
    per_site = "; ".join(
        f"{g.group}: {g.breakdown()} (polled peak of the sum {g.rss_mb:,.0f} MB)" for g in sites
    )
    extra = {
        "site_peak_rss_mb": worst.sum_of_peaks_mb,
        "agent_peak_rss_mb": max(g.by_name().get("agent", 0.0) for g in sites),
        "worker_peak_rss_mb": max(g.by_name().get("worker", 0.0) for g in sites),
        "federation_peak_rss_mb": watch.total_rss_mb,
        "federation_peak_anon_mb": watch.total_anon_mb,
        "federation_peak_pss_mb": watch.total_pss_mb,
        "min_mem_available_mb": watch.min_available_mb,
    }
    coordinator = watch.peak("coordinator")
    notes = {
        "site_peak_rss_mb": per_site,
        "agent_peak_rss_mb": per_site,
        "worker_peak_rss_mb": per_site,
        "federation_peak_rss_mb": (
            f"sum of every process's own peak {watch.sum_of_peaks_mb():,.0f} MB (an upper "
            f"bound): coordinator process tree {coordinator.breakdown()}; {per_site}; "
            f"{watch.samples} samples"
        ),
    }
    return extra, notes


def run_grpc(
    study: StudyConfig,
    params: int,
    sites: int,
    keep: bool,
    budget_mb: float | None = None,
    site_budget_mb: float | None = None,
) -> GridRun:
    root = Path(tempfile.mkdtemp(prefix="fedcare-system-"))
    # 20 minutes, plus each round's transfers at a slow 20 MB/s
    limit_s = 1200.0 + study.rounds * transfer_s(params, sites)
    try:
        names = [f"site-{k}" for k in range(sites)]
        extra_args = [] if budget_mb is None else ["--memory-budget-mb", str(budget_mb)]
        fed = run_federation(
            study, names, root, limit_s=limit_s, coordinator_args=extra_args,
            site_budget_mb=site_budget_mb,
        )  # fmt: skip
    finally:
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    extra, notes = grpc_memory(fed)
    extra = {"study_wall_s": fed.wall_s, **extra}
    if len(fed.completed_gaps) > 1:
        extra["round_wall_s"] = statistics.median(fed.completed_gaps[1:])
    rss_what = "coordinator process (VmHWM)"
    if budget_mb is not None:
        rss_what += (
            f", run with --memory-budget-mb {budget_mb:g} (aggregation sums above "
            f"{budget_mb / 8:g} MB on disk, memory-mapped)"
        )
    others = fed.memory.peak("coordinator").breakdown()
    if "+" in others:
        rss_what += f"; with its child processes {others}"
    method = "grpc" if budget_mb is None else f"grpc, memory budget {budget_mb:g} MB"
    if site_budget_mb is not None:
        method += f", site budget {site_budget_mb:g} MB"
        rss_what += f"; each site's memory_budget_mb {site_budget_mb:g} (params in a mapped file)"
    return GridRun(method, fed.durations, fed.coordinator_rss_mb, rss_what, extra, fed.status,
                   notes)  # fmt: skip


# Driver ---------------------------------------------------------------------------------------
def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} cores"


def estimate(grid: str, params: int, sites: int, args: argparse.Namespace) -> Estimate:
    if grid == "inmemory":
        return inmemory_estimate(params, sites)
    return grpc_estimate(params, sites, args.copies, args.memory_profile)


def refusal(need: Estimate, force: bool) -> str:
    """Why a run of this estimate does not start here ("" when it does)."""
    have = mem_available_mb()
    if need.total_mb <= have - MEMORY_MARGIN_MB or force:
        return ""
    return (
        f"skipped: this run needs {need.describe()}; this machine has {have / 1e3:.1f} GB "
        f"available and keeps {MEMORY_MARGIN_MB / 1e3:.0f} GB for other jobs (--force runs "
        "it anyway)"
    )


def _run_grid(
    grid: str, study: StudyConfig, params: int, sites: int, args: argparse.Namespace
) -> GridRun:
    need = estimate(grid, params, sites, args)
    print(f"  {grid}: estimated peak memory {need.describe()}", flush=True)
    reason = refusal(need, args.force)
    if reason:
        return GridRun(grid, [], status=reason)
    if grid == "inmemory":
        return run_inmemory(study, sites)
    return run_grpc(
        study, params, sites, args.keep, args.memory_budget_mb, args.site_memory_budget_mb
    )


def _base(label: str, size: Size, params: int, sites: int, machine: str) -> str:
    return (
        f"{label} model: mlp {list(size.hidden)} on {N_FEATURES} features, {params:,} "
        f"float32 parameters; {sites} sites, FedAvg, 1 SGD step (batch 8), no evaluation "
        f"rounds; {machine}, {_load()} at the end of the run"
    )


def run_size(label: str, args: argparse.Namespace, machine: str) -> list[Row]:
    """The grids for one model size: their rows and the ratio row; then ``--resume``."""
    size = SIZES[label]
    params, sites = param_count(size.hidden), args.sites or size.sites
    study = study_for(label, size, args.rounds or size.rounds, sites)
    print(f"{label}: mlp hidden {list(size.hidden)}, {params:,} parameters, {sites} sites, "
          f"{study.rounds} rounds; {_load()}", flush=True)  # fmt: skip
    rows: list[Row] = []
    runs: dict[str, GridRun] = {}
    grids = size.grids if args.grids is None else [g for g in args.grids.split(",") if g]
    for grid in (g for g in grids if g != "none"):
        t0 = time.perf_counter()
        run = runs[grid] = _run_grid(grid, study, params, sites, args)
        print(f"  {grid}: rounds {[round(d, 3) for d in run.durations]} s, {run.status[:300]} "
              f"({time.perf_counter() - t0:.1f} s; {_load()})", flush=True)  # fmt: skip
        base = _base(label, size, params, sites, machine)
        rows += timing_rows(label, params, sites, run, base) + memory_rows(label, run, base)
    if "grpc" in runs and "inmemory" in runs:
        ratio = ratio_row(label, params, runs["grpc"], runs["inmemory"])
        rows += [ratio] if ratio else []
    if args.resume:
        rows += _resume(label, size, params, args, machine)
    return rows


def _resume(label: str, size: Size, params: int, args: argparse.Namespace, machine: str
            ) -> list[Row]:  # fmt: skip
    need = grpc_estimate(params, 2, args.copies, args.memory_profile)
    print(f"  resume: estimated peak memory {need.describe()}", flush=True)
    reason = refusal(need, args.force)
    directions = [d.strip() for d in args.resume_directions.split(",") if d.strip()]
    if reason:
        print(f"  resume: {reason}")
        return []

    def make(sites: int) -> StudyConfig:
        return study_for(f"{label}-resume", size, 1, sites)

    base = _base(label, size, params, 2, machine)
    return resume_rows(label, params, directions, make, (args.cut_at, args.keep), base)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--sizes", default=",".join(DEFAULT_SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    add("--rounds", type=int, help="rounds per run (>= 2; default per size)")
    add("--sites", type=int, help="sites (default per size: 4, 2 at 1B)")
    add("--quick", action="store_true", help="smoke test: the 10k model only")
    add("--grids", help="inmemory, grpc, both or none (default per size)")
    add("--resume", action="store_true", help="also the resume measurement")
    add("--resume-directions", default="upload,download", help="upload, download or both")
    add("--cut-at", type=float, default=0.5, help="--resume cuts here (of the model; 0.5)")
    add("--force", action="store_true", help="run even if memory looks short")
    add("--memory-profile", choices=sorted(PROFILES), default="streaming",
        help="model copies per process in the estimate (system_estimate.py)")  # fmt: skip
    add("--copies", default="", help="override copies, e.g. coordinator=1,worker=2")
    add("--keep", action="store_true", help="keep the federation folders")
    add("--memory-budget-mb", type=float, default=None,
        help="the coordinator's budget (sums on disk above an eighth of it)")  # fmt: skip
    add("--site-memory-budget-mb", type=float, default=None,
        help="each site's memory_budget_mb (large params in a mapped scratch file)")  # fmt: skip
    add("--replace", action="store_true", help="write only this run's rows (default: merge)")
    add("--out", type=Path, default=RESULTS)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    labels = ["10k"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown or (args.rounds is not None and args.rounds < 2):
        parser.error(f"unknown sizes {unknown}" if unknown else "--rounds must be at least 2")
    if args.grids is not None and not set(args.grids.split(",")) <= {"inmemory", "grpc", "none"}:
        parser.error(f"--grids must name inmemory and/or grpc, or none; got {args.grids!r}")
    if not 0 < args.cut_at < 1:
        parser.error(f"--cut-at must be between 0 and 1, got {args.cut_at}")
    if not set(args.resume_directions.split(",")) <= set(DIRECTIONS):
        parser.error(f"--resume-directions: {args.resume_directions!r}, not upload/download")
    try:
        args.copies = parse_copies(args.copies, PROFILES[args.memory_profile])
    except ValueError as err:
        parser.error(str(err))
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    labels = _check(parser, args)
    assert isinstance(args.copies, Copies)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    started = time.perf_counter()
    rows = with_verdicts([row for label in labels for row in run_size(label, args, machine)])
    print_table(rows, labels)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {_load()}")
    stored = [] if args.replace or not args.out.exists() else json.loads(args.out.read_text())
    write_rows(merge_rows(stored, rows), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
