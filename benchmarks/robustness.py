"""Robustness benchmark: robust aggregation against malicious sites, over seeds.

Two experiments, both with the settings of ``examples/heart-disease.yaml`` (logistic
regression, global standardization, 20 rounds) and trained through the library
(``train_on_grid``, the one round loop) with attacks as site middleware
(:mod:`fedcare.simulation.attacks`):

* **4 hospitals, 1 malicious.** Each of the 4 UCI heart-disease hospitals in turn sends its
  update scaled x100, or sign-flipped (``-delta``, or ``-10 delta``); ``n`` = seeds x 4
  attacker choices. (With 4 sites the median and the trimmed mean with one site trimmed per
  side are the same estimator: the mean of the middle two values.)
* **20 sites, 5 malicious.** The pooled training rows of the 4 hospitals are split over 20
  simulated sites with a Dirichlet(1.0) label skew (fedcare's ``dirichlet_partition``, at least
  10 rows a site), a fresh split and 5 random malicious sites per seed.

Every model is evaluated by the sites' own code on the 4 hospitals' real test splits; the
figure is the unweighted mean over hospitals. Methods: FedAvg (no defence), norm bounding
(``max_norm`` 0.1, about twice the largest honest update norm in clean runs) around the
weighted mean, coordinate-wise median, trimmed mean (``trim`` 0.25: one site per side of 4,
five of 20) and multi-Krum (``f`` = 1 or 5). Targets (fedcare issue 5) compare with the
*clean FedAvg run* on the same seeds (and split). ``attacker_top`` is the share of rounds in
which the site the aggregator scored most anomalous was malicious (with 5 attackers: the share
of the 5 top-scored sites that were malicious); a site the default validation rejected that
round before the aggregator scored it (its norm over 100 times every other's) ranks first.

Writes ``benchmarks/results/robustness.json`` (rows ``{"benchmark", "dataset", "method",
"metric", "mean", "sd", "n", "unit", "notes"}``, SD over runs with ``ddof=1``) and prints a
table. Usage: ``python benchmarks/robustness.py [--seeds N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import FederatedDataset, SiteData
from fedcare.data.partition import dirichlet_partition
from fedcare.data.registry import load_dataset
from fedcare.evaluation.summary import summarize_sites
from fedcare.records.study import StudyConfig
from fedcare.simulation.attacks import malicious_mods
from fedcare.simulation.run import grid_for, train_on_grid
from quality_harness import evaluate_model

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "heart-disease.yaml"
RESULTS = HERE / "results" / "robustness.json"

CLEAN = "clean"
#: Scenario label -> (attack kind, strength); ``None`` is the clean run.
ATTACKS: dict[str, tuple[str, float] | None] = {
    CLEAN: None,
    "scale x100": ("scale", 100.0),
    "sign flip": ("sign_flip", 1.0),
    "sign flip x10": ("sign_flip", 10.0),
}


def methods(num_byzantine: int, *, trim: float) -> dict[str, list[dict[str, Any]]]:
    """Method name -> the study's ``aggregation:`` list."""
    return {
        "fedavg": [],
        "norm_bound+mean": [{"name": "norm_bound", "max_norm": 0.1}],
        "median": [{"name": "median"}],
        "trimmed_mean": [{"name": "trimmed_mean", "trim": trim}],
        "multi_krum": [{"name": "krum", "num_byzantine": num_byzantine}],
    }


@dataclass(frozen=True)
class Run:
    """One trained model: its mean test metrics and how often attackers were scored top."""

    metrics: dict[str, float]
    attacker_top: float | None
    attacker: str = ""


def attacker_top(history: Sequence[Any], malicious: Sequence[str]) -> float | None:
    """Share of the ``len(malicious)`` top-scored sites per round that were malicious."""
    shares = []
    for record in history:
        scores = record.fit.get("anomaly_scores")
        if not scores:
            return None
        # rejected by validation before the robust layer scored it: the first suspect
        screened = [s for s in record.fit.get("rejected_sites", []) if s not in scores]
        ranked = screened + sorted(scores, key=scores.get, reverse=True)
        top = ranked[: len(malicious)]
        shares.append(len(set(top) & set(malicious)) / len(malicious))
    return float(np.mean(shares)) if shares else None


def train_and_score(
    study: StudyConfig,
    train_sites: list[SiteData],
    eval_sites: Sequence[SiteData],
    attack: tuple[str, float] | None,
    malicious: Sequence[str],
) -> Run:
    mods = None
    if attack is not None:
        mods = malicious_mods(malicious, attack[0], strength=attack[1], seed=study.seed)
    grid = grid_for(train_sites, mods=mods)
    model = train_on_grid(grid, study, train_sites[0].train.input_shape, label="federated")
    per_site = evaluate_model(eval_sites, study, model)
    metrics = {k: float(v) for k, v in summarize_sites(per_site)["unweighted"].items()}
    top = attacker_top(model.history, malicious) if attack is not None else None
    return Run(metrics, top, ",".join(malicious))


def dirichlet_sites(ds: FederatedDataset, num_sites: int, seed: int) -> list[SiteData]:
    """The pooled training rows split over ``num_sites`` with Dirichlet(1.0) label skew."""
    pooled = ds.pooled().train
    rng = np.random.default_rng([seed, num_sites])
    parts = dirichlet_partition(np.asarray(pooled.y), num_sites, 1.0, rng, min_size=10)
    # Test splits are never used: models are evaluated on the hospitals' test splits.
    return [SiteData(f"site-{i:02d}", pooled.take(p), pooled.take(p)) for i, p in enumerate(parts)]


Results = dict[tuple[str, str], list[Run]]


def four_hospitals(ds: FederatedDataset, base: StudyConfig, seeds: range) -> Results:
    out: Results = defaultdict(list)
    sites = list(ds.sites)
    for seed in seeds:
        for method, layers in methods(1, trim=0.25).items():
            study = base.with_overrides(seed=seed, aggregation=layers)
            for scenario, attack in ATTACKS.items():
                attackers = [None] if attack is None else ds.site_ids
                for bad in attackers:
                    malicious = [] if bad is None else [bad]
                    run = train_and_score(study, sites, sites, attack, malicious)
                    out[(method, scenario)].append(run)
    return out


def twenty_sites(ds: FederatedDataset, base: StudyConfig, seeds: range) -> Results:
    out: Results = defaultdict(list)
    for seed in seeds:
        sites = dirichlet_sites(ds, 20, seed)
        pick = np.random.default_rng([seed, 5]).choice(20, size=5, replace=False)
        malicious = sorted(sites[i].site_id for i in pick)
        for method, layers in methods(5, trim=0.25).items():
            study = base.with_overrides(seed=seed, aggregation=layers)
            for scenario, attack in ATTACKS.items():
                run = train_and_score(study, sites, ds.sites, attack, malicious)
                out[(method, scenario)].append(run)
    return out


def _stats(values: Sequence[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 4), round(sd, 4)


def rows_of(
    dataset: str,
    results: Results,
    tolerance: float,
    setting: str,
    targeted: Sequence[str],
) -> list[dict[str, Any]]:
    """Rows of one experiment, with the targets checked in the accuracy rows' notes."""
    clean_acc = statistics.fmean(r.metrics["accuracy"] for r in results[("fedavg", CLEAN)])
    clean_loss = statistics.fmean(r.metrics["loss"] for r in results[("fedavg", CLEAN)])
    rows: list[dict[str, Any]] = []
    for (method, scenario), runs in results.items():
        label = f"{method} [{scenario}]"
        base = {"benchmark": "robustness", "dataset": dataset, "method": label, "n": len(runs)}
        for metric in ("accuracy", "loss"):
            mean, sd = _stats([r.metrics[metric] for r in runs])
            notes = "no attacker; n = seeds" if scenario == CLEAN else setting
            if metric == "accuracy":
                check = _target(method, scenario, runs, (clean_acc, clean_loss), tolerance)
                if check and method not in targeted:  # reported, but not an issue target
                    check = (
                        check.replace("target ", "").replace(": MET", "").replace(": MISSED", "")
                    )
                notes += "; " + check
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "mean": mean,
                    "sd": sd,
                    "unit": metric,
                    "notes": notes.strip("; "),
                }
            )
        tops = [r.attacker_top for r in runs if r.attacker_top is not None]
        if tops:
            mean, sd = _stats(tops)
            rows.append(
                {
                    **base,
                    "metric": "attacker_top",
                    "mean": mean,
                    "sd": sd,
                    "unit": "share",
                    "n": len(tops),
                    "notes": setting,
                }
            )
    return rows


def _target(
    method: str,
    scenario: str,
    runs: Sequence[Run],
    clean: tuple[float, float],
    tolerance: float,
) -> str:
    clean_acc, clean_loss = clean
    acc = statistics.fmean(r.metrics["accuracy"] for r in runs)
    if scenario == CLEAN:
        return f"clean FedAvg reference {clean_acc:.3f}" if method == "fedavg" else ""
    by_attacker: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by_attacker[r.attacker].append(r.metrics["accuracy"])
    worst = min(by_attacker, key=lambda a: statistics.fmean(by_attacker[a]))
    worst_note = f"worst attacker {worst}: {statistics.fmean(by_attacker[worst]):.3f}"
    if "," in worst:  # several malicious sites, drawn afresh per seed
        worst_note = f"worst seed: {min(r.metrics['accuracy'] for r in runs):.3f}"
    if method == "fedavg":
        loss = statistics.fmean(r.metrics["loss"] for r in runs)
        collapsed = clean_acc - acc > 0.10 or loss > 1.5 * clean_loss
        verdict = "MET" if collapsed else "MISSED"
        return (
            f"target FedAvg collapses (accuracy drop > 0.10 or loss > 1.5x clean): {verdict} "
            f"[accuracy {acc:.3f} vs {clean_acc:.3f}, loss {loss:.3f} vs {clean_loss:.3f}; "
            f"{worst_note}]"
        )
    verdict = "MET" if clean_acc - acc <= tolerance else "MISSED"
    return (
        f"target within {tolerance} of clean FedAvg: {verdict} "
        f"[{acc:.3f} vs {clean_acc:.3f}, drop {clean_acc - acc:+.3f}; {worst_note}]"
    )


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=170)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        table = Table(title=f"robustness: {dataset}", title_justify="left")
        for col in ("method [attack]", "metric", "mean ± SD", "n", "notes"):
            table.add_column(col, overflow="fold", max_width=90 if col == "notes" else None)
        for r in rows:
            if r["dataset"] == dataset and r["metric"] != "loss":
                notes = r["notes"].split("; ", 1)[1] if "; " in r["notes"] else ""
                value = f"{r['mean']:.3f} ± {r['sd']:.3f}"
                table.add_row(escape(r["method"]), r["metric"], value, str(r["n"]), escape(notes))
        console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        evaluate_every=0, baselines={"local": False, "pooled": False, "cross_site": False}
    )
    ds = load_dataset(base.dataset.name, **base.dataset.options)
    seeds = range(args.seeds)
    four = four_hospitals(ds, base, seeds)
    print(f"4 hospitals done ({time.perf_counter() - start:.0f} s)", flush=True)
    twenty = twenty_sites(ds, base, seeds)
    rows = rows_of(
        "heart-disease (4 hospitals, 1 malicious)",
        four,
        0.02,
        "attacker: each hospital in turn; n = seeds x 4",
        ("fedavg", "norm_bound+mean", "median", "trimmed_mean", "multi_krum"),
    ) + rows_of(
        "heart-disease Dirichlet(1.0) 20 sites, 5 malicious",
        twenty,
        0.03,
        "pooled training rows over 20 sites, 5 random malicious per seed; "
        "evaluated on the 4 hospitals' test splits",
        ("trimmed_mean", "multi_krum"),
    )
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    total = time.perf_counter() - start
    print(f"wrote {args.out} ({len(rows)} rows); total {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
