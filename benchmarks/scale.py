"""Scale benchmark (issue 17): parallel simulation, ``fedcare simulate --workers N``.

Row ``speedup``: PneumoniaMNIST FedAvg (``examples/pneumoniamnist.yaml``: 5 Dirichlet(0.5)
sites, the ``cnn_small`` CNN, 10 Adam steps per round) trained with ``--rounds`` rounds (default
6, not the study's 40: the per-round time is what is measured) over the sequential in-memory
grid (1 worker) and the parallel grid (2 workers, :mod:`fedcare.simulation.parallel`); the wall
time per round is each run's ``duration_s`` of rounds 2..R (training and the per-round
evaluation; round 1 and the workers' start are left out), and the speedup is the ratio of the
medians. Both runs must give the same model hash. Target: >= 1.7x on 2 cores. The load average
is in the notes (the machine may be shared).

Not yet here (issue 17): ``round_s`` at 10/100/1,000 sites with a 1M-parameter model and the
Ray, 1,000-site and straggler rows.

Writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "pneumoniamnist.yaml"
RESULTS = HERE / "results" / "scale.json"
DATASET = "pneumoniamnist (5 sites, Dirichlet 0.5; cnn_small)"

Row = dict[str, Any]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per run (>= 3)")
    parser.add_argument("--workers", type=int, default=2, help="the parallel run's workers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=args.rounds, baselines={"local": False, "pooled": False}
    )
    load_before = os.getloadavg()
    seq, seq_hash, seq_wall = one_run(study, 1)
    par, par_hash, par_wall = one_run(study, args.workers)
    load_after = os.getloadavg()
    speedup = statistics.median(seq) / statistics.median(par)
    same = seq_hash == par_hash
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}"
    )
    common = f"{args.rounds} rounds (not the study's 40), rounds 2..R timed; {machine}"
    rows = [
        _row("inmemory (1 worker)", "round_s", seq, "s", f"{common}; run wall {seq_wall:.1f} s"),
        _row(
            f"parallel ({args.workers} workers)",
            "round_s",
            par,
            "s",
            f"{common}; run wall {par_wall:.1f} s (workers' start included)",
        ),
        _row(
            f"parallel ({args.workers} workers) vs inmemory",
            "speedup",
            [speedup],
            "x",
            f"{'MET' if speedup >= 1.7 else 'MISSED'} (target >= 1.7x on 2 cores); ratio of "
            f"median round times; same model hash: {same} ({par_hash}); {common}",
        ),
    ]
    print(
        f"round_s: 1 worker {statistics.median(seq):.3f} s, {args.workers} workers "
        f"{statistics.median(par):.3f} s; speedup {speedup:.2f}x; same hash {same}; "
        f"load {load_before} -> {load_after}"
    )
    write_rows(rows, args.out)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
