"""Repeated splits: heart disease over many train/test splits x seeds, with 95% intervals.

``quality.py`` scores every method on one split (FLamby's ``random_state`` 43) and its SD is over
training seeds only. Here each repetition is a new stratified 66/34 split of every hospital's
rows (``load_heart_disease(split_seed=k)``, k = 0, 1, ...), and within it:

1. **Baselines tuned on validation data.** Each site's local model and the pooled model choose
   their own learning rate, training length and L2 (``BASELINE_GRID``) on a validation share of
   that repetition's *training* rows (``quality_harness.validation_split``: 30% per site,
   stratified): the pooled model by the mean validation loss over sites, each local model by
   the validation loss at its own site (what a hospital alone could do), one tuning seed (100).
   No test row is read.
2. **Best strategy on validation data.** FedAvg, FedProx and SCAFFOLD keep the settings of
   ``tuning.json`` (``quality_protocols.HEART``); ``best-on-validation`` is, per repetition,
   the one with the lowest validation loss, scored on test.
3. **Scored on test** with training seeds 0..S-1: every method on every site's test split,
   accuracy and AUROC averaged unweighted over sites (as ``quality.py``). The local and pooled
   models are also run with ``quality.py``'s fixed settings (``...-quality-settings``), which is
   what an outsider re-running ``quality.py`` on other splits gets.

Intervals: each repetition's figure is the mean over its training seeds; the row's ``mean`` is
the mean over splits, ``sd`` the SD over splits and ``lo``/``hi`` a t-interval (95%, ``n - 1``
degrees of freedom) over the split-level means. Differences (``fedavg - pooled`` ...) are paired
within each split and get the same interval. The splits are not independent samples of new
patients (they re-divide the same 740 rows), so the intervals describe split-to-split variation
of this benchmark, not the uncertainty of the population figure; they are too narrow for that.

FLamby's split (``split_seed`` 43) is run the same way and quoted in the notes, outside the
intervals. Each finished split is appended to ``results/repeated_runs.jsonl`` (per-split,
per-seed scores; ``--fresh`` starts over), so a run can be stopped and resumed. The TCGA-BRCA
pooled Cox baseline (``repeated_tcga.py``, 5 training seeds) is run with ``--tcga``.

Usage: ``python benchmarks/repeated.py [--splits 20] [--seeds 3] [--tcga] [--only-tcga]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.data.base import FederatedDataset
from fedcare.data.heart import SPLIT_SEED
from fedcare.data.registry import load_dataset
from fedcare.evaluation.summary import summarize_sites
from quality import base_study, study_for
from quality_harness import merge, run_method, validation_split
from quality_protocols import HEART
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "repeated.json"
RUNS = HERE / "results" / "repeated_runs.jsonl"
STRATEGIES = ("fedavg", "fedprox", "scaffold")
SITES = ("cleveland", "hungary", "switzerland", "va")
TUNE_SEED = 100
METRICS = ("accuracy", "auroc")
#: Local / pooled training settings searched on validation data: four training lengths
#: (lr x rounds of one epoch, SGD batch 16) x four L2 penalties.
BASELINE_GRID: tuple[dict[str, Any], ...] = tuple(
    {"training": {"lr": lr, "l2": l2}, "rounds": rounds}
    for lr, rounds in ((0.01, 20), (0.03, 20), (0.1, 20), (0.1, 100))
    for l2 in (0.0003, 0.003, 0.03, 0.3)
)


def _loss(ds: FederatedDataset, study: Mapping[str, Any], method: str, site: str | None) -> float:
    per_site = run_method(ds, study, method, TUNE_SEED).per_site
    if site is not None:
        return float(per_site[site]["loss"])
    return float(summarize_sites(per_site)["unweighted"]["loss"])


def tune(val: FederatedDataset, base: Mapping[str, Any]) -> dict[str, Any]:
    """Per baseline the grid entry of lowest validation loss; the strategy of lowest loss."""
    chosen: dict[str, Any] = {}
    for method in ("pooled", *(f"local-{s}" for s in SITES)):
        site = method.removeprefix("local-") if method != "pooled" else None
        study = study_for(HEART, base, method)
        losses = [_loss(val, merge(study, over), method, site) for over in BASELINE_GRID]
        chosen[method] = BASELINE_GRID[losses.index(min(losses))]  # first of equal losses
    strategy_loss = {m: _loss(val, study_for(HEART, base, m), m, None) for m in STRATEGIES}
    chosen["best"] = min(STRATEGIES, key=lambda m: strategy_loss[m])
    return chosen


def _scores(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    means = summarize_sites(per_site)["unweighted"]
    return {
        **{m: float(means[m]) for m in METRICS},
        "sites": {s: {m: float(v[m]) for m in METRICS} for s, v in per_site.items()},
    }


def run_split(split_seed: int, seeds: Sequence[int]) -> dict[str, Any]:
    """Tune on validation rows, then train and test every method at every seed."""
    base = base_study(HEART)
    ds = load_dataset("heart-disease", protocol="raw", split_seed=split_seed)
    chosen = tune(validation_split(ds), base)
    plans: dict[str, tuple[str, dict[str, Any]]] = {
        m: (m, study_for(HEART, base, m)) for m in STRATEGIES
    }
    for method in ("pooled", *(f"local-{s}" for s in SITES)):
        fixed = study_for(HEART, base, method)
        plans[method] = (method, merge(fixed, chosen[method]))
        plans[f"{method}-quality-settings"] = (method, fixed)
    scores: dict[str, list[dict[str, Any]]] = {}
    for name, (method, study) in plans.items():
        scores[name] = [_scores(run_method(ds, study, method, s).per_site) for s in seeds]
    scores["best-on-validation"] = scores[chosen["best"]]
    return {"split_seed": split_seed, "seeds": list(seeds), "chosen": chosen, "scores": scores}


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- statistics


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # slow to import: only when summarizing

    return float(t.ppf(0.975, df))


def interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, SD, and the 95% t-interval of the mean of ``values`` (finite ones only)."""
    kept = [v for v in values if math.isfinite(v)]
    mean = statistics.mean(kept)
    if len(kept) < 2:
        return mean, 0.0, math.nan, math.nan
    sd = statistics.stdev(kept)
    half = t_quantile(len(kept) - 1) * sd / math.sqrt(len(kept))
    return mean, sd, mean - half, mean + half


def split_means(runs: Sequence[Mapping[str, Any]], method: str, metric: str) -> list[float]:
    """Per split: the mean over training seeds of ``method``'s unweighted-over-sites score."""
    out = []
    for run in runs:
        values = [s[metric] for s in run["scores"][method] if math.isfinite(s[metric])]
        out.append(statistics.mean(values) if values else math.nan)
    return out


def row(method: str, metric: str, values: Sequence[float], unit: str, notes: str) -> dict[str, Any]:
    mean, sd, lo, hi = interval(values)
    return {
        "benchmark": "repeated",
        "dataset": "heart-disease",
        "method": method,
        "metric": metric,
        "mean": round(mean, 4),
        "sd": round(sd, 4),
        "n": sum(math.isfinite(v) for v in values),
        "unit": unit,
        "notes": notes,
        "lo": None if math.isnan(lo) else round(lo, 4),
        "hi": None if math.isnan(hi) else round(hi, 4),
    }


def _settings(over: Mapping[str, Any]) -> str:
    t = over["training"]
    return f"lr {t['lr']}, rounds {over['rounds']}, l2 {t['l2']}"


def _choices(runs: Sequence[Mapping[str, Any]], method: str) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        choice = run["chosen"][method]
        key = choice if isinstance(choice, str) else _settings(choice)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{k} in {n}" for k, n in ranked)


def _notes(runs: Sequence[Mapping[str, Any]], method: str) -> str:
    seeds = len(runs[0]["seeds"])
    head = f"mean over {len(runs)} splits of the mean over {seeds} seeds; 95% t-interval"
    if method == "best-on-validation":
        return f"{head}; strategy of lowest validation loss, chosen per split: " + _choices(
            runs, "best"
        )
    if method.endswith("-quality-settings"):
        return f"{head}; quality.py's fixed baseline settings (lr 0.01, rounds 20, l2 0.0003)"
    if method in STRATEGIES:
        return f"{head}; settings of tuning.json (quality_protocols.HEART)"
    return f"{head}; settings chosen on validation rows, per split: " + _choices(runs, method)


def _difference(runs: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> dict[str, Any]:
    diffs = [
        x - y
        for x, y in zip(split_means(runs, a, metric), split_means(runs, b, metric), strict=True)
    ]
    kept = [d for d in diffs if math.isfinite(d)]
    close = sum(abs(d) <= 0.01 for d in kept)
    not_below = sum(d >= -0.01 for d in kept)
    above = sum(d > 0 for d in kept)
    notes = (
        f"paired by split ({a} minus {b}, each split's mean over seeds); 95% t-interval; "
        f"|difference| <= 0.01 in {close} of {len(kept)} splits, >= -0.01 in {not_below}, "
        f"> 0 in {above}"
    )
    return row(f"{a} - {b}", metric, diffs, f"{metric} difference", notes)


def rows_of(
    runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of every method and paired difference; ``reference`` (FLamby's split 43, not in
    the intervals) is quoted in the notes."""
    methods = list(runs[0]["scores"])
    methods.remove("best-on-validation")
    methods.insert(len(STRATEGIES), "best-on-validation")
    undefined = sum(
        not math.isfinite(run["scores"]["fedavg"][0]["sites"][site]["auroc"])
        for run in runs
        for site in SITES
    )
    auroc = (
        "; AUROC averaged over the sites where it is defined (not where a site's test rows "
        f"hold one class: {undefined} site-splits of {len(runs) * len(SITES)}, Switzerland's "
        "single negative row landing in training)"
    )
    out = [
        row(m, k, split_means(runs, m, k), k, _notes(runs, m) + (auroc if k == "auroc" else ""))
        for m in methods
        for k in METRICS
    ]
    pairs = [("fedavg", "pooled"), ("best-on-validation", "pooled")]
    pairs += [("fedavg", "pooled-quality-settings")]
    pairs += [("fedavg", f"local-{s}") for s in SITES]
    pairs += [("fedavg", f"local-{s}-quality-settings") for s in ("cleveland", "hungary")]
    pairs += [("pooled", "pooled-quality-settings")]
    out += [_difference(runs, a, b, k) for a, b in pairs for k in METRICS]
    if reference is not None:
        for r in out:
            a, _, b = r["method"].partition(" - ")
            value = split_means([reference], a, r["metric"])[0]
            if b:
                value -= split_means([reference], b, r["metric"])[0]
            r["notes"] += f"; FLamby's split {SPLIT_SEED} alone (not in the interval): {value:.4f}"
    return out


def heart_runs(split_seeds: Sequence[int], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The runs of ``split_seeds`` at ``seeds`` (stored ones, the missing ones run now)."""
    runs = [r for r in load_runs(RUNS) if r["seeds"] == list(seeds)]
    done = {r["split_seed"] for r in runs}
    for k in split_seeds:
        if k in done:
            continue
        t0 = time.perf_counter()
        run = run_split(k, seeds)
        with RUNS.open("a") as f:
            f.write(json.dumps(run) + "\n")
        runs.append(run)
        acc = {m: statistics.mean(s["accuracy"] for s in run["scores"][m]) for m in run["scores"]}
        print(
            f"split {k:3d}: fedavg {acc['fedavg']:.3f} pooled {acc['pooled']:.3f} "
            f"(quality settings {acc['pooled-quality-settings']:.3f}) "
            f"best {run['chosen']['best']} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    wanted = set(split_seeds)
    return sorted((r for r in runs if r["split_seed"] in wanted), key=lambda r: r["split_seed"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=20, help="split seeds 0..N-1")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..S-1 per split")
    parser.add_argument("--fresh", action="store_true", help="discard the stored runs")
    parser.add_argument("--tcga", action="store_true", help="also the TCGA-BRCA pooled Cox")
    parser.add_argument("--only-tcga", action="store_true", help="only the TCGA-BRCA part")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    kept = json.loads(args.out.read_text()) if args.out.exists() else []
    rows: list[dict[str, Any]] = []
    if args.only_tcga:
        rows += [r for r in kept if r["dataset"] != "tcga-brca"]
    else:
        if args.fresh and RUNS.exists():
            RUNS.unlink()
        seeds = list(range(args.seeds))
        runs = heart_runs(range(args.splits), seeds)
        reference = None if args.splits > SPLIT_SEED else heart_runs([SPLIT_SEED], seeds)[0]
        rows += rows_of(runs, reference)
    if args.tcga or args.only_tcga:
        from repeated_tcga import tcga_rows

        rows += tcga_rows(range(5))
    else:
        rows += [r for r in kept if r["dataset"] == "tcga-brca"]
    for r in rows:
        ci = "" if r["lo"] is None else f" [{r['lo']:.4f}, {r['hi']:.4f}]"
        print(f"{r['dataset']:14s} {r['method']:42s} {r['metric']:9s} {r['mean']:.4f}{ci}")
    write_rows(rows, args.out)
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
