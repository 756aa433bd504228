"""Speed benchmark: wall time of a 20-round heart-disease simulation, without baselines.

Runs ``examples/heart-disease.yaml`` with ``rounds: 20`` and no local or pooled baselines
through :func:`fedcare.run_simulation` (data loading from the cache or mirror, the federated
statistics round, 20 training rounds with evaluation after each, final evaluation), once to
warm up imports and caches, then ``--repeats`` times (default 7), and reports the median.
Writes ``benchmarks/results/simulation_speed.json``. Target: well under 10 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "heart-disease.yaml"
RESULTS = HERE / "results" / "simulation_speed.json"
ROUNDS = 20


def one_run(study: StudyConfig) -> float:
    start = time.perf_counter()
    results = run_simulation(study)
    elapsed = time.perf_counter() - start
    if len(results["history"]) != ROUNDS:
        raise RuntimeError(f"expected {ROUNDS} rounds, got {len(results['history'])}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (>= 5)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=ROUNDS, baselines={"local": False, "pooled": False}
    )
    one_run(study)  # warm-up: imports, dataset cache
    times = [one_run(study) for _ in range(args.repeats)]
    median = statistics.median(times)
    sd = statistics.stdev(times)
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    notes = (
        f"{ROUNDS}-round heart-disease simulation (examples/heart-disease.yaml, 4 sites, no "
        f"baselines), after one warm-up run; runs: {', '.join(f'{t:.3f}' for t in times)} s; "
        f"{machine}"
    )
    rows = [
        {
            "benchmark": "simulation_speed",
            "dataset": "heart-disease",
            "method": study.strategy.name,
            "metric": f"median wall time, {ROUNDS} rounds",
            "mean": round(median, 4),
            "sd": round(sd, 4),
            "n": len(times),
            "unit": "s",
            "notes": notes + "; target: well under 10 s",
        },
        {
            "benchmark": "simulation_speed",
            "dataset": "heart-disease",
            "method": study.strategy.name,
            "metric": "median wall time per round",
            "mean": round(median / ROUNDS, 5),
            "sd": round(sd / ROUNDS, 5),
            "n": len(times),
            "unit": "s",
            "notes": "the median above divided by the number of rounds",
        },
    ]
    print(
        f"{ROUNDS}-round heart-disease simulation: median {median:.3f} s (SD {sd:.3f} s, "
        f"n={len(times)}; min {min(times):.3f}, max {max(times):.3f}); target well under 10 s"
    )
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
