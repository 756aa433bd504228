"""Scale benchmark (issue 17): parallel simulation and many simulated sites.

Parts (``--parts``, default all; the rows of parts not run stay in ``--out``):

* ``speedup``: PneumoniaMNIST FedAvg (``examples/pneumoniamnist.yaml``: 5 Dirichlet(0.5)
  sites, the ``cnn_small`` CNN, 10 Adam steps per round) trained with ``--rounds`` rounds
  (default 6, not the study's 40: the per-round time is what is measured) over the sequential
  in-memory grid (1 worker) and the parallel grid (``--workers``, default 2,
  :mod:`fedcare.simulation.parallel`); the wall time per round is each run's ``duration_s`` of
  rounds 2..R (training and the per-round evaluation; round 1 and the workers' start are left
  out), and the speedup is the ratio of the medians. Both runs must give the same model hash.
  Target: >= 1.7x on 2 cores.
* ``round``: rows ``round_s@N`` for N in ``--sites`` (default 10, 100, 1000) and each of
  ``--backends`` (default inmemory, parallel, ray): a 1M-parameter model that does not train
  (:mod:`scale_sites`), seconds per round, peak memory of the process tree and the ratio to
  Flower 1.41 in the notes. Target: >= 10x faster than Flower.
* ``train1000``: rows ``round_s@N_train`` and ``peak_rss_mb@N_train`` for N in
  ``--train-sites`` (default 1000): real local training at every site. Target: <= 2 GB.
* ``stragglers``: 20 sites, 10 % of them 10x slower: synchronous FedAvg vs deadline-bound
  rounds vs FedBuff (:mod:`scale_stragglers`), rows ``time_to_sync_accuracy_ratio`` (target
  <= 0.6 for deadline-bound or FedBuff, within 0.01 accuracy) and ``final_accuracy``.

The ``ray`` rows are skipped, with the reason printed, when Ray is not installed or
``open_grid`` has no Ray backend. The load average is in the notes (the machine may be shared).
Writes ``benchmarks/results/scale.json``. Quick check: ``--parts round,train1000 --sites 10
--train-sites 50 --site-rounds 3 --out /tmp/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcare.data.registry import load_dataset
from fedcare.evaluation.model_card import model_hash
from fedcare.records.study import StudyConfig
from fedcare.simulation.training import open_grid, train_on_grid
from results_file import write_rows
from scale_sites import BACKENDS, site_rows
from scale_stragglers import Setup, straggler_rows

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "pneumoniamnist.yaml"
RESULTS = HERE / "results" / "scale.json"
DATASET = "pneumoniamnist (5 sites, Dirichlet 0.5; cnn_small)"

Row = dict[str, Any]
PARTS = ("speedup", "round", "train1000", "stragglers")


def _row(method: str, metric: str, values: Sequence[float], unit: str, notes: str) -> Row:
    return {
        "benchmark": "scale",
        "dataset": DATASET,
        "method": method,
        "metric": metric,
        "mean": round(float(statistics.median(values)), 5),
        "sd": round(float(statistics.stdev(values)), 5) if len(values) > 1 else 0.0,
        "n": len(values),
        "unit": unit,
        "notes": notes,
    }


def one_run(study: StudyConfig, workers: int) -> tuple[list[float], str, float]:
    """Per-round seconds (rounds 2..R), the model hash and the whole run's wall time."""
    ds = load_dataset(study.dataset.name, **study.dataset.options)
    shape = ds.sites[0].train.input_shape
    start = time.perf_counter()
    with open_grid(list(ds.sites), workers=workers, feature_names=ds.feature_names) as grid:
        model = train_on_grid(grid, study, shape, label="federated")
    wall = time.perf_counter() - start
    return [r.duration_s for r in model.history[1:]], model_hash(model.params), wall


def speedup_rows(rounds: int, workers: int) -> tuple[list[Row], bool]:
    """The ``speedup`` part's rows and whether both runs gave the same model hash."""
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=rounds, baselines={"local": False, "pooled": False}
    )
    load_before = os.getloadavg()
    seq, seq_hash, seq_wall = one_run(study, 1)
    par, par_hash, par_wall = one_run(study, workers)
    load_after = os.getloadavg()
    speedup = statistics.median(seq) / statistics.median(par)
    same = seq_hash == par_hash
    threads = _torch_threads()
    tag = f", torch threads {threads} per process"  # the model depends on torch's threads
    machine = (
        f"{machine_note()}; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}"
    )
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    common = (
        f"torch threads {threads} in the parent and each worker (OMP_NUM_THREADS={omp}); "
        f"{rounds} rounds (not the study's 40), rounds 2..R timed; {machine}"
    )
    rows = [
        _row(
            f"inmemory (1 worker){tag}", "round_s", seq, "s", f"{common}; run wall {seq_wall:.1f} s"
        ),
        _row(
            f"parallel ({workers} workers){tag}",
            "round_s",
            par,
            "s",
            f"{common}; run wall {par_wall:.1f} s (workers' start included)",
        ),
        _row(
            f"parallel ({workers} workers) vs inmemory{tag}",
            "speedup",
            [speedup],
            "x",
            f"{'MET' if speedup >= 1.7 else 'MISSED'} (target >= 1.7x on 2 cores); ratio of "
            f"median round times; same model hash: {same} ({par_hash}); {common}",
        ),
    ]
    print(
        f"round_s: 1 worker {statistics.median(seq):.3f} s, {workers} workers "
        f"{statistics.median(par):.3f} s; speedup {speedup:.2f}x; same hash {same}; "
        f"load {load_before} -> {load_after}"
    )
    return rows, same


def _torch_threads() -> int:
    """Torch's intra-op threads in this process (the runs loaded torch)."""
    import torch

    return int(torch.get_num_threads())


def machine_note() -> str:
    """The processor, core count and Python version."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def merge_rows(old: Sequence[Row], new: Sequence[Row]) -> list[Row]:
    """``old`` with the rows ``new`` measures again replaced (same dataset, method and metric)
    and ``new``'s other rows added: the rows of parts not run this time are kept."""
    key = lambda r: (r.get("dataset"), r.get("method"), r.get("metric"))  # noqa: E731
    fresh = {key(r): r for r in new}
    kept = [fresh.pop(key(r), r) for r in old]
    return kept + [r for r in new if key(r) in fresh]


def _choices(value: str, valid: Sequence[str], what: str) -> list[str]:
    got = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in got if v not in valid]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"{what} must be some of {list(valid)}, got {value!r}")
    return got


def _counts(value: str) -> list[int]:
    try:
        got = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        got = []
    if not got or min(got) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 10,100, got {value!r}")
    return got


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        type=lambda v: _choices(v, PARTS, "--parts"),
        default=list(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--sites", type=_counts, default=[10, 100, 1000], help="sites of the round part"
    )
    parser.add_argument(
        "--train-sites", type=_counts, default=[1000], help="sites of the train1000 part"
    )
    parser.add_argument(
        "--backends",
        type=lambda v: _choices(v, BACKENDS, "--backends"),
        default=list(BACKENDS),
        help=f"backends of the round and train1000 parts (default: {','.join(BACKENDS)})",
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the speedup runs (>= 3)")
    parser.add_argument(
        "--site-rounds", type=int, default=5, help="rounds of the round and train1000 runs (>= 2)"
    )
    parser.add_argument("--workers", type=int, default=2, help="the parallel runs' workers")
    parser.add_argument(
        "--straggler-rounds", type=int, default=Setup.rounds, help="rounds of the sync run"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    if args.site_rounds < 2:
        parser.error("--site-rounds must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    ok = True
    for part in args.parts:
        if part == "speedup":
            got, ok = speedup_rows(args.rounds, args.workers)
            rows += got
        elif part == "stragglers":
            rows += straggler_rows(Setup(rounds=args.straggler_rounds))
        else:
            sites = args.sites if part == "round" else args.train_sites
            rows += site_rows(
                part, sites, args.backends, args.site_rounds, machine_note(), args.workers
            )
    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else []
    write_rows(merge_rows(old, rows), args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
