"""Stragglers (issue 17): synchronous FedAvg vs deadline-bound rounds vs FedBuff.

20 sites: UCI Heart Disease (FLamby's rows and per-centre standardisation) from its 4
hospitals, pooled and split again over 20 sites with a Dirichlet(1.0) label skew (training rows
by :func:`fedcare.data.partition.dirichlet_partition`, test rows evenly), a small MLP (one
hidden layer of 16; a linear model's accuracy settles after one round, too soon to time), one
local epoch of minibatch SGD, one torch thread per process. Each site runs in its own worker
process (:class:`~fedcare.simulation.parallel.ParallelGrid`, 20 workers). Every site's fit
task takes ``--base-s`` seconds more than its training (the
:class:`~fedcare.simulation.stragglers.Slowdown` mod sleeps them, so they cost no CPU: a
hospital's training time, not this machine's); 10 % of the sites (drawn by seed) sleep
``--factor`` times as long. (Not ``Slowdown(factor)``, which multiplies the fit's measured time:
20 workers on 2 cores wait for CPU, and multiplying that wait made the synchronous rounds vary
from 2.5 to 20 s.)

Methods, each over the same sites and stragglers:

* ``sync``: FedAvg, every round waits for all 20 sites (``--rounds`` rounds);
* ``deadline``: FedAvg with ``round_grace_s`` (a round closes ``--grace-s`` after
  ``min_sites`` = 90 % of the sites replied; the stragglers' replies come late and are taken
  into no round);
* ``fedbuff``: buffered asynchronous aggregation (:mod:`fedcare.strategy.fedbuff`; all 20
  sites train at once, a server step every ``--buffer`` updates, staleness-weighted).

After each round (server step) the benchmark evaluates the global model on the pooled test rows
of all sites (its own time is not counted). The target is the synchronous run's final accuracy;
``time_to_sync_accuracy_ratio`` is the wall time a method needs until its accuracy is within
0.01 of it, divided by the synchronous run's whole wall time (target <= 0.6 for deadline-bound
or FedBuff). Rows: ``time_to_sync_accuracy_ratio`` and ``final_accuracy`` per method, with the
seconds per round in the notes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.data.partition import dirichlet_partition
from fedcare.data.registry import load_dataset
from fedcare.models.registry import build_model
from fedcare.models.torch_runtime import import_torch
from fedcare.records.study import StudyConfig
from fedcare.simulation.stragglers import Slowdown, pick_stragglers
from fedcare.simulation.training import open_grid
from fedcare.strategy.base import StrategyState
from fedcare.strategy.driver import continue_study, start_study, study_strategy
from fedcare.strategy.loop import RoundRecord

Row = dict[str, Any]
METHODS = ("sync", "deadline", "fedbuff")
DATASET = "heart-disease (4 hospitals pooled, 20 Dirichlet(1.0) sites; MLP 16)"
TOLERANCE = 0.01


@dataclass(frozen=True)
class Setup:
    """The federation every method runs over."""

    sites: int = 20
    fraction: float = 0.1
    factor: float = 10.0
    base_s: float = 0.2
    rounds: int = 20
    grace_s: float = 0.1
    buffer: int = 10
    server_lr: float = 1.0
    seed: int = 0


@dataclass
class Trace:
    """One method's run: wall seconds and pooled accuracy after each round (server step)."""

    method: str
    wall_s: list[float]
    accuracy: list[float]
    round_s: float

    def time_to(self, target: float) -> float | None:
        """Wall seconds until the accuracy first came within :data:`TOLERANCE` of ``target``."""
        for wall, acc in zip(self.wall_s, self.accuracy, strict=True):
            if acc >= target - TOLERANCE:
                return wall
        return None


def study_for(method: str, setup: Setup) -> StudyConfig:
    """The study each method runs (the same model, data and local training)."""
    quorum = round(setup.sites * (1 - setup.fraction))
    spec: dict[str, Any] = {
        "name": f"stragglers-{method}",
        "dataset": {"name": "heart-disease", "options": {"protocol": "flamby"}},
        "model": {"kind": "torch", "architecture": "mlp", "hidden": [16]},
        "training": {"epochs": 1, "lr": 0.03, "batch_size": 8, "optimizer": "sgd"},
        "rounds": setup.rounds,
        "min_sites": quorum,
        "seed": setup.seed,
        "evaluate_every": 0,
        "round_timeout": 120.0,
    }
    if method == "deadline":
        spec["round_grace_s"] = setup.grace_s
        spec["rounds"] = 3 * setup.rounds
    if method == "fedbuff":
        spec["strategy"] = {
            "name": "fedbuff",
            "options": {
                "buffer_size": setup.buffer,
                "concurrency": setup.sites,
                "server_lr": setup.server_lr,
            },
        }
        spec["min_sites"] = 1
        spec["rounds"] = 3 * setup.rounds * setup.sites // setup.buffer
    return StudyConfig.model_validate(spec)


def resplit(ds: FederatedDataset, sites: int, seed: int) -> FederatedDataset:
    """``ds``'s rows pooled and split over ``sites`` sites (training rows by label with a
    Dirichlet(1.0) skew, test rows evenly at random)."""
    train = [s.train for s in ds.sites]
    test = [s.test for s in ds.sites]
    X = np.concatenate([d.X for d in train])
    y = np.concatenate([d.y for d in train])
    Xt = np.concatenate([d.X for d in test])
    yt = np.concatenate([d.y for d in test])
    rng = np.random.default_rng(seed)
    parts = dirichlet_partition(y, sites, 1.0, rng, min_size=8)
    cuts = np.array_split(rng.permutation(len(yt)), sites)
    out = tuple(
        SiteData(f"site-{k:02d}", Dataset(X[idx], y[idx]), Dataset(Xt[cut], yt[cut]))
        for k, (idx, cut) in enumerate(zip(parts, cuts, strict=True))
    )
    return replace(ds, sites=out)


def slow_sites(site_ids: Sequence[str], setup: Setup) -> list[str]:
    """The stragglers (the same for every method)."""
    return pick_stragglers(site_ids, setup.fraction, setup.seed)


def run_method(method: str, setup: Setup) -> Trace:
    """Train ``method``'s study over 20 worker processes; trace accuracy against wall time."""
    study = study_for(method, setup)
    ds = resplit(load_dataset(study.dataset.name, **study.dataset.options), setup.sites, 0)
    ids = [s.site_id for s in ds.sites]
    slow = set(slow_sites(ids, setup))
    mods = {
        s: [Slowdown(1.0, setup.factor * setup.base_s)]
        if s in slow
        else [Slowdown(1.0, setup.base_s)]
        for s in ids
    }
    X = np.concatenate([s.test.X for s in ds.sites])
    y = np.concatenate([s.test.y for s in ds.sites])
    adapter = build_model(study.model)
    wall: list[float] = []
    accuracy: list[float] = []
    durations: list[float] = []
    spent = [0.0]  # seconds of this benchmark's own evaluation, not counted
    import_torch().set_num_threads(1)  # each worker takes this process's count
    with open_grid(list(ds.sites), workers=setup.sites, mods=mods) as grid:
        strategy = study_strategy(study, len(ids))
        start = start_study(grid, study, strategy, study.name, ds.sites[0].train.X.shape[1:])
        t0 = time.perf_counter()

        def on_round(rec: RoundRecord, state: StrategyState) -> None:
            now = time.perf_counter()
            wall.append(now - t0 - spent[0])
            durations.append(rec.duration_s)
            scores = adapter.predict(state.params, X)
            accuracy.append(float(np.mean((np.asarray(scores) >= 0.5) == y)))
            spent[0] += time.perf_counter() - now

        continue_study(grid, study, strategy, study.name, start, on_round=on_round)
    per_round = float(np.median(durations[1:] if len(durations) > 1 else durations))
    print(f"{method}: {len(wall)} rounds in {wall[-1]:.1f} s, accuracy {accuracy}", flush=True)
    return Trace(method, wall, accuracy, per_round)


def straggler_rows(setup: Setup, methods: Sequence[str] = METHODS) -> list[Row]:
    """Run the methods (``sync`` first: its final accuracy and wall time are the reference)."""
    traces = {m: run_method(m, setup) for m in ("sync", *[m for m in methods if m != "sync"])}
    sync = traces["sync"]
    target, total = sync.accuracy[-1], sync.wall_s[-1]
    rows: list[Row] = []
    for method, trace in traces.items():
        reached = trace.time_to(target)
        ratio = None if reached is None else reached / total
        notes = (
            f"{setup.sites} sites, {int(setup.fraction * 100)} % {setup.factor:g}x slower "
            f"(each fit + {setup.base_s} s, a straggler's + {setup.factor * setup.base_s:g} s); "
            f"target: sync accuracy {target:.3f} after "
            f"{len(sync.accuracy)} rounds in {total:.1f} s, within {TOLERANCE}; "
            f"{method}: {len(trace.accuracy)} rounds, {trace.round_s:.2f} s per round (median), "
            f"final accuracy {trace.accuracy[-1]:.3f}, "
            + ("target not reached" if reached is None else f"reached at {reached:.1f} s")
        )
        print(f"{method:>9}: {notes}")
        if ratio is not None or method != "sync":
            rows.append(_row(method, "time_to_sync_accuracy_ratio", ratio, "ratio", notes))
        rows.append(_row(method, "final_accuracy", trace.accuracy[-1], "accuracy", notes))
    return rows


def _row(method: str, metric: str, value: float | None, unit: str, notes: str) -> Row:
    return {
        "benchmark": "scale",
        "dataset": DATASET,
        "method": method,
        "metric": metric,
        "mean": None if value is None else round(float(value), 4),
        "sd": 0.0,
        "n": 1,
        "unit": unit,
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=Setup.rounds)
    parser.add_argument("--base-s", type=float, default=Setup.base_s)
    parser.add_argument("--grace-s", type=float, default=Setup.grace_s)
    parser.add_argument("--buffer", type=int, default=Setup.buffer)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    setup = Setup(rounds=args.rounds, base_s=args.base_s, grace_s=args.grace_s, buffer=args.buffer)
    for row in straggler_rows(setup, args.methods.split(",")):
        print(row["method"], row["metric"], row["mean"])


if __name__ == "__main__":
    main()
