"""How the hyper-parameters of ``quality.py`` were chosen: grid search on validation data only.

For each tuned dataset, each site's training rows are split 70/30 (stratified by label or
event, fixed seed; ``quality_harness.validation_split``); models train on the 70% and are
scored on the 30% by their mean **validation loss** (binary cross-entropy, or the Cox partial
likelihood per event: a proper scoring rule, much less coarse than accuracy on validation sets
of 9 to 60 rows), averaged unweighted over sites and over 3 seeds (100, 101, 102, not the
benchmark's seeds). No test row is read. Then, in order:

1. **shared**: FedAvg's local training settings and rounds (the grid ``shared``);
2. **baseline**: the same grid for the pooled model (local models reuse its settings);
3. **strategies**: each other strategy's options (and, in its grid, local learning rate), on
   top of the shared settings.

eICU's validation rows are drawn per stay (the loader exposes no patient id), so one patient's
stays can fall on both sides: optimistic, but alike for every configuration.

The lowest loss wins (ties go to the earlier one in grid order); the primary metric on the
validation rows is reported beside it. The chosen values are
copied by hand into ``examples/*.yaml`` (FedAvg) and ``quality_protocols.py``; this script
changes nothing, it shows how they were found.

PneumoniaMNIST is tuned differently: its sites' test splits are shares of the official
*validation* split, so three training schedules are compared on them directly (one seed), and
the official test split (the benchmark's holdout) is never read; no strategy stage.

Run: ``python benchmarks/tuning.py [--only DATASET]`` (about 7 minutes on 2 CPU cores). Writes
``benchmarks/results/tuning.json`` (every configuration's validation score; ``CHOSEN`` in the
notes marks the winners).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.data.registry import load_dataset
from fedcare.evaluation.summary import summarize_sites
from fedcare.records.study import StudyConfig
from quality_harness import merge, run_method, validation_split

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
SEEDS = (100, 101, 102)
Grid = Mapping[str, Sequence[Any]]

_ADAPTIVE: Grid = {
    "training.lr": (0.01, 0.03, 0.1),
    "strategy.server_lr": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
}
_STRATEGY_GRIDS: Mapping[str, Grid] = {
    "fedprox": {"strategy.mu": (0.001, 0.01, 0.1, 1.0)},
    "fedavgm": {"strategy.momentum": (0.5, 0.9), "strategy.server_lr": (0.1, 0.3, 1.0)},
    "fedadam": _ADAPTIVE,
    "fedyogi": _ADAPTIVE,
    "fedadagrad": _ADAPTIVE,
    "scaffold": {"training.lr": (0.01, 0.03, 0.1, 0.3), "strategy.server_lr": (0.5, 1.0)},
}


@dataclass(frozen=True)
class TuningSpec:
    """``shared`` is a grid (all combinations) or an explicit list of configurations."""

    example: str
    metric: str
    shared: Grid | Sequence[Mapping[str, Any]]
    strategies: bool = True
    seeds: Sequence[int] = SEEDS
    split_train: bool = True


SPECS: dict[str, TuningSpec] = {
    "heart-disease": TuningSpec(
        "heart-disease.yaml",
        "accuracy",
        {
            "training.lr": (0.01, 0.03, 0.1),
            "training.l2": (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1),
            "rounds": (20, 50),
        },
    ),
    "tcga-brca": TuningSpec(
        "tcga-brca.yaml",
        "cindex",
        {
            "training.lr": (0.003, 0.01, 0.03, 0.1),
            "training.l2": (0.01, 0.03, 0.1, 0.3, 1.0),
            "training.batch_size": (32, 64),
        },
    ),
    "eicu": TuningSpec(
        "eicu.yaml",
        "auroc",
        {
            "training.lr": (0.01, 0.03, 0.1, 0.3),
            "training.l2": (0.001, 0.01, 0.03, 0.1),
            "rounds": (20, 50),
        },
    ),
    # The sites' test splits are the official validation split: tune on them as they are (the
    # official test split is the benchmark's holdout). Three schedules of the same Adam
    # training, one seed (each run takes 20-60 s here).
    "pneumoniamnist": TuningSpec(
        "pneumoniamnist.yaml",
        "auroc",
        [
            {"rounds": 10, "training.max_steps": None, "training.batch_size": 64},
            {"rounds": 40, "training.max_steps": 10, "training.batch_size": 32},
            {"rounds": 30, "training.max_steps": 20, "training.batch_size": 32},
        ],
        strategies=False,
        seeds=(100,),
        split_train=False,
    ),
}


def overrides(config: Mapping[str, Any], strategy: str) -> dict[str, Any]:
    """Study overrides from a flat config such as ``{"training.lr": 0.1, "rounds": 20}``."""
    out: dict[str, Any] = {"strategy": {"name": strategy, "options": {}}}
    for key, value in config.items():
        head, _, tail = key.partition(".")
        if head == "strategy":
            out["strategy"]["options"][tail] = value
        elif tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    return out


def configs(grid: Grid | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(grid, Mapping):
        return [dict(c) for c in grid]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def score(
    ds: Any, study: Mapping[str, Any], method: str, metric: str, seeds: Sequence[int]
) -> dict[str, float]:
    """Validation metric (mean, SD over seeds) and mean validation loss."""
    values, losses = [], []
    for seed in seeds:
        means = summarize_sites(run_method(ds, study, method, seed).per_site)["unweighted"]
        values.append(means[metric])
        losses.append(means["loss"])
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "loss": statistics.mean(losses),
    }


def search(
    ds: Any, base: Mapping[str, Any], grid: Any, method: str, spec: TuningSpec
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every configuration's validation score; returns the best one and the rows."""
    rows: list[dict[str, Any]] = []
    strategy = "fedavg" if method == "pooled" else method
    metric = spec.metric
    for config in configs(grid):
        study = merge(base, overrides(config, strategy))
        rows.append({"config": config, **score(ds, study, method, metric, spec.seeds)})
    best = min(rows, key=lambda r: r["loss"])  # the first of equal losses
    print(
        f"  {method:12s} loss {best['loss']:.4f} {metric} {best['mean']:.4f}  {best['config']}",
        flush=True,
    )
    return best["config"], rows


def tune(name: str, spec: TuningSpec) -> list[dict[str, Any]]:
    base = StudyConfig.from_yaml(EXAMPLES / spec.example).model_dump()
    ds = load_dataset(base["dataset"]["name"], **base["dataset"]["options"])
    if spec.split_train:
        ds = validation_split(ds)
    print(f"{name}: {ds.description.splitlines()[0][:60]}; seeds {spec.seeds}", flush=True)
    shared, shared_rows = search(ds, base, spec.shared, "fedavg", spec)
    tuned = merge(base, overrides(shared, "fedavg"))
    results = {"fedavg": (shared, shared_rows)}
    results["pooled"] = search(ds, base, spec.shared, "pooled", spec)
    for strategy, grid in _STRATEGY_GRIDS.items() if spec.strategies else ():
        results[strategy] = search(ds, tuned, grid, strategy, spec)
    out = []
    for method, (chosen, rows) in results.items():
        for row in rows:
            out.append(
                {
                    "benchmark": "tuning",
                    "dataset": name,
                    "method": method,
                    "metric": f"validation {spec.metric}",
                    "mean": row["mean"],
                    "sd": row["sd"],
                    "n": len(spec.seeds),
                    "unit": spec.metric,
                    "notes": ("CHOSEN " if row["config"] == chosen else "")
                    + f"loss {row['loss']:.4f} "
                    + json.dumps(row["config"]),
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SPECS), help="tune one dataset")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for name, spec in SPECS.items():
        if args.only in (None, name):
            rows.extend(tune(name, spec))
    path = HERE / "results" / "tuning.json"
    if args.only and path.exists():  # keep the other datasets' rows
        rows = [r for r in json.loads(path.read_text()) if r["dataset"] != args.only] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {path} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
