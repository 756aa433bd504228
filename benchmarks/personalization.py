"""Personalization benchmark: FLamby's Fed-Heart-Disease protocol, scored as FL4Health scores it.

Each site's model is evaluated on the site's own test rows and the accuracies are averaged over
the four sites (unweighted): the figure FL4Health reports for personalized FL on this dataset
(FENDA-FL 0.812 +/- 0.005, the best published one we know; issue 15's target). The federated
training is ``examples/heart-disease-flamby.yaml`` unchanged (FLamby's exact protocol: logistic
regression, per-centre z-scores, local SGD lr 0.001, batch 4, 100 updates per round, 15
rounds); what differs per method is the study's ``personalization`` section, run through
``run_simulation`` (the site runtime trains and keeps the personal models; the results'
``personalization`` block compares global, personal and local model per site).

Rows (``benchmarks/results/personalization.json``, the format of the other results files):

* ``finetune-personal``, ``ditto-personal``: the personal models (``mean`` over sites);
* ``fedavg-global``: the FedAvg model every site shares, on the same test rows;
* ``local``: each site's model trained on its rows alone with the study's (federated) local
  settings for the same 1500 steps (``baselines.local``).

Each figure is the mean and SD (``ddof=1``) over seeds 0-4 of the mean over sites.

**Tuning, on validation data only.** The personalization settings are chosen by grid search
on a validation split of the training rows (``quality_harness.validation_split``: 30 % of each
site's training rows, stratified; train on the other 70 %), scored like
``benchmarks/tuning.py``: the personal models' mean validation loss over sites (a proper
scoring rule, less coarse than accuracy on 9 to 60 validation rows), averaged over three
validation splits (split seeds 2024-2026, each trained at one of seeds 100-102, not the
benchmark's): with so few rows, which rows are held out moves the score far more than the
training seed. The lowest loss wins (ties: the earlier in grid order). No test
row is read before the chosen settings run on the real split. Ditto with ``lam = 0`` is pure
local training from the global start, so its grid also covers "no federation at all".

**Result** (benchmarks/results/personalization.json): the target is missed. Ditto 0.794 and
fine-tuning 0.789 (settings chosen on validation data) beat the shared FedAvg model (0.736) by
5-6 points but not the sites' own local models (0.805), nor FENDA-FL's 0.812. The validation
splits favoured more local training (Ditto chose ``lam = 0``, i.e. purely local models with lr
0.01; fine-tuning 100 epochs at lr 0.03) than the test rows reward: at Cleveland the shared
model (0.788) beats every personal one (0.72-0.76), while Switzerland's 16 test rows (15
positive) give any personal model 0.938, a quarter of the mean. A per-site choice between the
global and the personal model on the site's validation rows picked the personal one almost
everywhere and did not help either.

FedBN is not benchmarked here: logistic regression has no normalization layers (the study is
refused with a ConfigError).

Run: ``python benchmarks/personalization.py [--seeds N] [--quick]`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.data.base import FederatedDataset
from fedcare.data.registry import load_dataset
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation
from quality_harness import validation_split
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "heart-disease-flamby.yaml"
RESULTS = HERE / "results" / "personalization.json"
DATASET = "heart-disease-flamby"
TUNING_SEEDS = (100, 101, 102)
#: FENDA-FL on Fed-Heart-Disease (FL4Health): mean over sites of each site's model, own test set.
TARGET = 0.812

#: One validation split per tuning seed: which rows are held out moves the validation score far
#: more than the training seed does (9 to 60 validation rows per site).
SPLIT_SEEDS = (2024, 2025, 2026)
GRIDS: Mapping[str, Mapping[str, Sequence[Any]]] = {
    "finetune": {"epochs": (5, 20, 50, 100), "lr": (0.003, 0.01, 0.03, 0.1)},
    "ditto": {"lam": (0.0, 0.01, 0.1, 0.3, 1.0), "lr": (0.001, 0.002, 0.005, 0.01)},
}


def study_with(base: StudyConfig, personalization: Mapping[str, Any], seed: int) -> StudyConfig:
    """The protocol's study with ``personalization`` at ``seed`` (no clinical report: faster)."""
    return base.with_overrides(
        personalization=dict(personalization),
        seed=seed,
        validation={"report": False},
        baselines={"local": True, "pooled": False, "cross_site": False},
    )


def site_means(
    base: StudyConfig, ds: FederatedDataset, personalization: Mapping[str, Any], seed: int
) -> dict[str, dict[str, float]]:
    """``{"global"|"personal"|"local": {metric: mean over sites}}`` of one simulation."""
    result = run_simulation(study_with(base, personalization, seed), dataset=ds)
    block = result["personalization"]
    if block["failed_sites"]:
        raise RuntimeError(f"sites failed: {block['failed_sites']}")
    return {k: dict(v) for k, v in block["mean"].items()}


def configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return math.nan, math.nan
    return statistics.mean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0


def tune(
    base: StudyConfig,
    splits: Sequence[FederatedDataset],
    method: str,
    seeds: Sequence[int],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every configuration's validation score (split ``i`` trained at seed ``i``); the chosen
    one (lowest mean loss) and the rows."""
    scored = []
    for config in configs(GRIDS[method]):
        personal = {"method": method, **config}
        runs = [site_means(base, ds, personal, s) for ds, s in zip(splits, seeds, strict=True)]
        loss = statistics.mean(r["personal"]["loss"] for r in runs)
        acc, sd = mean_sd([r["personal"]["accuracy"] for r in runs])
        scored.append((config, loss, acc, sd))
        print(f"    {method:9s} {json.dumps(config):34s} loss {loss:.4f} acc {acc:.4f}", flush=True)
    chosen = min(scored, key=lambda c: c[1])[0]
    rows = [
        {
            "benchmark": "personalization-tuning",
            "dataset": DATASET,
            "method": f"{method}-personal",
            "metric": "validation accuracy",
            "mean": round(acc, 4),
            "sd": round(sd, 4),
            "n": len(seeds),
            "unit": "accuracy",
            "notes": ("CHOSEN " if config == chosen else "")
            + f"mean validation loss {loss:.4f}; {json.dumps(config, sort_keys=True)}",
        }
        for config, loss, acc, sd in scored
    ]
    return chosen, rows


def row(method: str, values: Sequence[float], notes: str) -> dict[str, Any]:
    mean, sd = mean_sd(values)
    return {
        "benchmark": "personalization",
        "dataset": DATASET,
        "method": method,
        "metric": "accuracy",
        "mean": None if math.isnan(mean) else round(mean, 4),
        "sd": None if math.isnan(sd) else round(sd, 4),
        "n": sum(math.isfinite(v) for v in values),
        "unit": "accuracy",
        "notes": notes,
    }


def target_note(values: Sequence[float]) -> str:
    mean, sd = mean_sd(values)
    verdict = "MET" if mean >= TARGET else "MISSED"
    return f"target >= FENDA-FL's {TARGET} (FL4Health): {verdict} [{mean:.4f} ± {sd:.4f}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="benchmark seeds (0..N-1)")
    parser.add_argument("--quick", action="store_true", help="one tuning seed, no file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = StudyConfig.from_yaml(EXAMPLE)
    ds = load_dataset(base.dataset.name, **base.dataset.options)
    tuning_seeds = TUNING_SEEDS[:1] if args.quick else TUNING_SEEDS
    splits = [validation_split(ds, seed=s) for s in SPLIT_SEEDS[: len(tuning_seeds)]]
    chosen: dict[str, dict[str, Any]] = {}
    tuning_rows: list[dict[str, Any]] = []
    for method in GRIDS:
        print(f"tuning {method} on the validation split (seeds {tuning_seeds})", flush=True)
        chosen[method], rows = tune(base, splits, method, tuning_seeds)
        tuning_rows.extend(rows)
        print(f"  chosen {method}: {chosen[method]}", flush=True)
    seeds = range(args.seeds)
    runs = {m: [site_means(base, ds, {"method": m, **chosen[m]}, s) for s in seeds] for m in GRIDS}
    protocol = "examples/heart-disease-flamby.yaml (FLamby's protocol), seeds 0-" + str(
        args.seeds - 1
    )
    rows = []
    for m in GRIDS:
        values = [r["personal"]["accuracy"] for r in runs[m]]
        notes = (
            f"personalization {json.dumps({'method': m, **chosen[m]}, sort_keys=True)} "
            f"(chosen on validation loss); {protocol}; {target_note(values)}"
        )
        rows.append(row(f"{m}-personal", values, notes))
    first = runs[next(iter(GRIDS))]
    rows.append(
        row(
            "fedavg-global",
            [r["global"]["accuracy"] for r in first],
            f"the FedAvg model every site shares, each site's test rows; {protocol}",
        )
    )
    rows.append(
        row(
            "local",
            [r["local"]["accuracy"] for r in first],
            "each site alone (baselines.local: the study's local SGD, 15 x 100 steps), its own "
            f"test rows; {protocol}",
        )
    )
    for r in rows:
        print(f"  {r['method']:18s} accuracy {r['mean']:.4f} ± {r['sd']:.4f} (n={r['n']})")
    for m in GRIDS:
        print(f"  {m}: {target_note([r['personal']['accuracy'] for r in runs[m]])}")
    if not args.quick:
        write_rows(rows + tuning_rows, RESULTS)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
