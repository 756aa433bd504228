"""Adversarial benchmark: one authenticated site sends bad replies; does the study survive?

The settings of ``examples/heart-disease.yaml`` (4 UCI hospitals, logistic regression, global
standardization from a federated statistics round, 20 rounds, no ``aggregation:`` entry, so
only the always-on validation defends), trained through the library's one round loop
(``start_study`` + ``continue_study``) over the in-memory grid. Each hospital in turn is the
attacker (``n`` = seeds x 4); its honest site code runs and a site mod then tampers with the
reply, every round:

* **bad weights**: fit ``num_samples`` 2^31 - 1 (far above the rows it declared);
* **int updates**: its update x1000 cast to int64;
* **NaN updates**: its update with every value NaN;
* **huge-norm updates**: its update x10^6 (finite, float64, right shape: the default
  validation's outlier screen rejects it when it is over 100 times every other update; also
  shown with ``norm_bound`` (``max_norm`` 0.1, as in ``benchmarks/robustness.py``) and
  ``trimmed_mean`` (``trim`` 0.25));
* **bad statistics**: round-0 sums x10^3 and sums of squares x10^6 (consistent, so only the
  robust outlier check of :mod:`fedcare.analytics.moments_check` can catch them); **wrong-
  shape statistics** (every array doubled in length);
* **bad metrics**: evaluation metrics without ``n``, or ``n = -1``;
* **refused statistics**: an error reply to the statistics task.

Rows per attack: ``completed`` (share of runs that finished all rounds), ``accuracy`` (the final
model on the 4 hospitals' real test splits, evaluated by the honest site code, unweighted mean
over hospitals), ``accuracy_delta`` (vs the clean run of the same seed) and
``attacker_named`` (share of runs whose round records name the attacker: round 0's
``statistics_rejected``, or a round's ``failed_sites``/``rejected_sites``). Simulation over the
in-memory grid, not a deployment: the loop and the checks are the same ones the coordinator
runs (``tests/deployment/test_bad_replies.py`` runs the attacks over mutual TLS); the
transport additionally refuses NaN at decoding there.

Writes ``benchmarks/results/adversarial.json`` (rows ``{"benchmark", "dataset", "method",
"metric", "mean", "sd", "n", "unit", "notes"}``, SD over runs with ``ddof=1``) and prints a
table. Usage: ``python benchmarks/adversarial.py [--seeds N]`` (default 1 seed, about a minute).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import FederatedDataset
from fedcare.data.registry import load_dataset
from fedcare.errors import FedcareError
from fedcare.evaluation.summary import summarize_sites
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import TrainedModel, grid_for
from fedcare.site.app import Handler, Mod
from fedcare.strategy.driver import continue_study, start_study, study_strategy
from quality_harness import evaluate_model
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "heart-disease.yaml"
RESULTS = HERE / "results" / "adversarial.json"
NOTES = (
    "simulation over the in-memory grid (the coordinator's round loop and checks), "
    "1 of 4 hospitals attacking every round, each in turn"
)

Edit = Callable[[Reply], Reply]


def _scaled(factor: float, dtype: Any = None) -> Edit:
    def edit(reply: Reply) -> Reply:
        arrays = reply.arrays.map(lambda v: (v * factor).astype(dtype or v.dtype))
        return replace(reply, arrays=arrays)

    return edit


def _nan(reply: Reply) -> Reply:
    return replace(reply, arrays=reply.arrays.map(lambda v: np.full_like(v, np.nan)))


def _poisoned_stats(reply: Reply) -> Reply:
    a = reply.arrays
    return replace(
        reply, arrays=ArrayRecord({**a, "sum": a["sum"] * 1e3, "sumsq": a["sumsq"] * 1e6})
    )


def _wide_stats(reply: Reply) -> Reply:
    return replace(reply, arrays=reply.arrays.map(lambda v: np.concatenate([v, v])))


def _metrics(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Edit:
    return lambda reply: replace(reply, metrics=change(dict(reply.metrics)))


#: Attack label -> (task kind it tampers with, the edit; ``None`` refuses the task).
ATTACKS: dict[str, tuple[str, Edit | None]] = {
    "bad weights (num_samples 2^31-1)": ("fit", lambda r: replace(r, num_samples=2**31 - 1)),
    "int updates (int64)": ("fit", _scaled(1000.0, np.int64)),
    "NaN updates": ("fit", _nan),
    "huge-norm updates (x1e6)": ("fit", _scaled(1e6)),
    "bad statistics (poisoned sums)": ("stats", _poisoned_stats),
    "bad statistics (wrong shape)": ("stats", _wide_stats),
    "bad metrics (no n)": (
        "evaluate",
        _metrics(lambda m: {k: v for k, v in m.items() if k != "n"}),
    ),
    "bad metrics (n = -1)": ("evaluate", _metrics(lambda m: {**m, "n": -1.0})),
    "refused statistics": ("stats", None),
}
#: Stacks the huge-norm attack also runs against (study ``aggregation:`` lists).
ROBUST = {
    "norm_bound": [{"name": "norm_bound", "max_norm": 0.1}],
    "trimmed_mean": [{"name": "trimmed_mean", "trim": 0.25}],
}
HUGE = "huge-norm updates (x1e6)"
EXTRA = {
    HUGE: "finite float64 of the right shape: the default validation holds back the round's "
    "largest update and rejects it when over 100 times every other (DEFAULT_OUTLIER_RATIO); "
    "a smaller scaling or several attackers need a robust stack, rows below",
    f"{HUGE} with norm_bound": "rejected by the outlier screen before the norm bound",
    f"{HUGE} with trimmed_mean": "rejected by the outlier screen before the trimmed mean",
}


def attack_mod(kind: str, edit: Edit | None) -> Mod:
    def mod(task: Task, next_handler: Handler) -> Reply:
        if task.kind != kind:
            return next_handler(task)
        if edit is None:
            return Reply.failure(task, "refused", "this site will not take part")
        reply = next_handler(task)
        return reply if reply.error is not None else edit(reply)

    return mod


@dataclass(frozen=True)
class Run:
    completed: bool
    accuracy: float | None
    named: bool
    reason: str = ""


def _named(attacker: str, rejected0: Mapping[str, str], history: Sequence[Any]) -> bool:
    if attacker in rejected0:
        return True
    for record in history:
        for part in (record.fit, record.evaluate or {}):
            if attacker in part.get("failed_sites", {}) or attacker in part.get(
                "rejected_sites", []
            ):
                return True
    return False


def run_once(ds: FederatedDataset, study: StudyConfig, attacker: str | None, attack: str) -> Run:
    mods = {}
    if attacker is not None:
        kind, edit = ATTACKS[attack]
        mods = {attacker: [attack_mod(kind, edit)]}
    grid = grid_for(list(ds.sites), mods=mods)
    study_id = f"{study.name}/{attack}"
    try:
        strategy = study_strategy(study, len(ds.sites))
        start = start_study(grid, study, strategy, study_id, ds.sites[0].train.input_shape)
        state, history = continue_study(grid, study, strategy, study_id, start)
    except FedcareError as err:
        return Run(False, None, False, f"{type(err).__name__}: {err}"[:200])
    model = TrainedModel("federated", state.params, start.task_arrays, history)
    per_site = evaluate_model(ds.sites, study, model)
    accuracy = float(summarize_sites(per_site)["unweighted"]["accuracy"])
    named = attacker is not None and _named(attacker, start.statistics_rejected, history)
    return Run(True, accuracy, named)


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 4), round(sd, 4)


def _rows(label: str, runs: Sequence[Run], clean: Mapping[int, float]) -> list[dict[str, Any]]:
    base = {"benchmark": "adversarial", "dataset": "heart-disease", "method": label}
    done = [r for r in runs if r.completed]
    accs = [r.accuracy for r in done if r.accuracy is not None]
    deltas = [r.accuracy - clean[i] for i, r in enumerate(runs) if r.accuracy is not None]
    failed = sorted({r.reason for r in runs if not r.completed})
    notes = "; ".join([NOTES, *([EXTRA[label]] if label in EXTRA else [])])
    notes += f"; failed: {failed}" if failed else ""
    figures = {
        "completed": ([float(r.completed) for r in runs], "share"),
        "accuracy": (accs, "accuracy"),
        "accuracy_delta": (deltas, "accuracy"),
        "attacker_named": ([float(r.named) for r in runs], "share"),
    }
    out = []
    for metric, (values, unit) in figures.items():
        mean, sd = _stats(values)
        n = len(values) if values else len(runs)
        out.append(
            {**base, "metric": metric, "mean": mean, "sd": sd, "n": n, "unit": unit, "notes": notes}
        )
    return out


def run(seeds: range) -> list[dict[str, Any]]:
    ds = load_dataset("heart-disease", protocol="raw")
    base = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        baselines={"local": False, "pooled": False, "cross_site": False}
    )
    clean_runs: list[Run] = []
    scenarios: dict[str, list[Run]] = {}
    clean_by_run: dict[str, dict[int, float]] = {}
    for seed in seeds:
        study = base.with_overrides(seed=seed)
        clean = run_once(ds, study, None, "clean")
        clean_runs.append(clean)
        assert clean.accuracy is not None, clean.reason
        plans = [(a, study, a) for a in ATTACKS] + [
            (f"{HUGE} with {name}", study.with_overrides(aggregation=layers), HUGE)
            for name, layers in ROBUST.items()
        ]
        for label, s, attack in plans:
            for attacker in ds.site_ids:
                i = len(scenarios.setdefault(label, []))
                scenarios[label].append(run_once(ds, s, attacker, attack))
                clean_by_run.setdefault(label, {})[i] = clean.accuracy
    rows = _rows("clean", clean_runs, {i: r.accuracy or 0.0 for i, r in enumerate(clean_runs)})
    for label, runs in scenarios.items():
        rows.extend(_rows(label, runs, clean_by_run[label]))
    return rows


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="adversarial: heart-disease, 1 of 4 hospitals attacking")
    for col in ("attack", "completed", "accuracy", "Δ vs clean", "attacker named", "n"):
        table.add_column(col)
    by: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["metric"]] = r

    def cell(r: Mapping[str, Any]) -> str:
        return "n/a" if r["mean"] is None else f"{r['mean']:.3f} ± {r['sd']:.3f}"

    for method, m in by.items():
        table.add_row(
            method,
            cell(m["completed"]),
            cell(m["accuracy"]),
            cell(m["accuracy_delta"]),
            cell(m["attacker_named"]),
            str(m["completed"]["n"]),
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds (default 1)")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = run(range(args.seeds))
    print_table(rows)
    write_rows(rows, RESULTS)
    print(f"took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
