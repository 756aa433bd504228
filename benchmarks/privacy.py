"""Privacy benchmark: what secure aggregation costs per round (more privacy rows come later).

Secure aggregation (SecAgg+, ``privacy: {mode: secure}``) against plaintext FedAvg on the same
inputs: ``N`` simulated sites each send a fixed random update of ``D`` float32 parameters
(``D = 100_000`` by default) with a sample count; 10 % of the sites (at least one) drop out
after sharing their keys (they never send a masked input; in the plaintext run the same sites
fail their fit task). Both runs go through the one round loop (``run_round``) over an in-memory
grid, and the secure run through the real site middleware (``SecAggMod``: quantize, mask,
share, unmask). Sites do no training, so the figures isolate the protocol's cost.

Three views of a round, medians over ``--reps`` rounds:

* ``serial``: wall time of ``run_round`` in this process, every site's work done one after the
  other (what a one-process simulation pays).
* ``parallel``: the critical path a deployment would see with sites working in parallel:
  the coordinator's own time (serial time minus all site time) plus, per exchange, the slowest
  site's time. Transport time is not included.
* ``parallel + training``: ``parallel`` plus an assumed local training time of ``--train-s``
  seconds per round (the same for both methods, 1 s by default: one epoch of a small model).

The ratio rows divide the secure figure by the plaintext one (target: at most 3x). Writes
``benchmarks/results/privacy.json`` (the median goes in ``mean``; ``sd`` is over the reps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.secure.secagg.layer import with_secure_sum
from fedcare.site.secagg import SecAggMod
from fedcare.strategy.fedopt import FedAvg
from fedcare.strategy.loop import RoundConfig, run_round
from fedcare.transport.inmemory import InMemoryGrid
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "privacy.json"
Row = dict[str, Any]
Handler = Callable[[Task], Reply]


@dataclass
class Clock:
    """Time spent inside site handlers, per exchange (kind + stage)."""

    per_exchange: dict[str, list[float]] = field(default_factory=dict)

    def timed(self, handler: Handler) -> Handler:
        def run(task: Task) -> Reply:
            start = time.perf_counter()
            reply = handler(task)
            key = f"{task.kind}/{task.config.get('secagg_stage', '')}"
            self.per_exchange.setdefault(key, []).append(time.perf_counter() - start)
            return reply

        return run


def fixed_site(site: str, update: ArrayRecord, n: int, dropout: bool, secure: bool) -> Handler:
    def train(task: Task) -> Reply:
        if dropout and task.kind == "fit":
            return Reply.failure(task, "offline", "dropped out after sharing")
        return Reply(task.study_id, task.round, site, "fit", arrays=update, num_samples=n)

    if not secure:
        return train
    mod = SecAggMod(site, None, simulated=True)
    return lambda task: mod(task, train)


def one_setting(
    num_sites: int, dim: int, reps: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(seed)
    sites = [f"site-{i:03d}" for i in range(num_sites)]
    dropped = set(rng.choice(sites, size=max(1, num_sites // 10), replace=False).tolist())
    updates = {s: ArrayRecord({"w": rng.normal(0, 0.1, dim).astype(np.float32)}) for s in sites}
    sizes = {s: int(rng.integers(50, 500)) for s in sites}
    params = ArrayRecord({"w": np.zeros(dim, dtype=np.float32)})
    out: dict[str, dict[str, list[float]]] = {}
    results: dict[str, np.ndarray] = {}
    for method, secure in (("plaintext fedavg", False), ("secagg+", True)):
        strategy: Any = FedAvg(min_sites=1)
        if secure:
            strategy = with_secure_sum(strategy, {})
        state = strategy.init_state(params)
        cfg = RoundConfig(study_id="bench", num_rounds=reps, seed=seed, evaluate_every=0)
        times: dict[str, list[float]] = {"serial": [], "parallel": []}
        for rnd in range(1, reps + 1):
            clock = Clock()
            grid = InMemoryGrid(
                {
                    s: clock.timed(fixed_site(s, updates[s], sizes[s], s in dropped, secure))
                    for s in sites
                }
            )
            start = time.perf_counter()
            new_state, _ = run_round(grid, strategy, state, cfg, rnd)
            serial = time.perf_counter() - start
            site_total = sum(sum(v) for v in clock.per_exchange.values())
            critical = sum(max(v) for v in clock.per_exchange.values())
            times["serial"].append(serial)
            times["parallel"].append(serial - site_total + critical)
        results[method] = new_state.params["w"]
        out[method] = times
    err = float(np.abs(results["secagg+"] - results["plaintext fedavg"]).max())
    out["check"] = {"max_abs_diff": [err]}
    return out


def rows_for(
    num_sites: int, dim: int, data: dict[str, dict[str, list[float]]], train_s: float, reps: int
) -> list[Row]:
    dataset = f"synthetic {num_sites} sites x {dim} params, 10% dropout after sharing"
    rows: list[Row] = []
    med: dict[tuple[str, str], float] = {}
    for method in ("plaintext fedavg", "secagg+"):
        views = {
            **data[method],
            "parallel + training": [t + train_s for t in data[method]["parallel"]],
        }
        for view, values in views.items():
            med[(method, view)] = statistics.median(values)
            rows.append(
                {
                    "benchmark": "privacy",
                    "dataset": dataset,
                    "method": method,
                    "metric": f"round_time_{view.replace(' + ', '_plus_')}",
                    "mean": med[(method, view)],
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": reps,
                    "unit": "s",
                    "notes": f"median of {reps} rounds; {view} view (see module docstring); "
                    + (f"training assumed {train_s:g} s" if "training" in view else "no training"),
                }
            )
    for view in ("serial", "parallel", "parallel + training"):
        ratio = med[("secagg+", view)] / med[("plaintext fedavg", view)]
        rows.append(
            {
                "benchmark": "privacy",
                "dataset": dataset,
                "method": "secagg+ / plaintext",
                "metric": f"round_time_ratio_{view.replace(' + ', '_plus_')}",
                "mean": ratio,
                "sd": 0.0,
                "n": reps,
                "unit": "x",
                "notes": f"ratio of medians; target <= 3x; max |secure - plaintext| model diff "
                f"{data['check']['max_abs_diff'][0]:.2g}",
            }
        )
    return rows


def print_table(rows: Sequence[Row]) -> None:
    print(f"{'dataset':<62} {'method':<20} {'metric':<38} {'value':>10}")
    for r in rows:
        print(
            f"{r['dataset']:<62} {r['method']:<20} {r['metric']:<38} {r['mean']:>10.4g} {r['unit']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--train-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for n in args.sites:
        rows += rows_for(
            n, args.dim, one_setting(n, args.dim, args.reps, args.seed), args.train_s, args.reps
        )
    print_table(rows)
    for r in rows:
        r["notes"] = f"{r['notes']}; {os.cpu_count()} CPUs"
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
