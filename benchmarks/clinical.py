"""Clinical benchmark: external validation by leave-one-site-out (issue 15).

For heart disease (4 hospitals) and the eICU demo (its 4 US census regions as sites), with the
settings of ``examples/heart-disease.yaml`` and ``examples/eicu.yaml`` (20 rounds of FedAvg on
L2-regularized logistic regression), ``run_simulation`` with ``validation:
leave_one_site_out`` and the local and pooled baselines gives, on each hospital's (region's)
test split:

* ``leave-one-site-out``: the federated model trained on the other sites (external validation);
* ``leave-one-site-out-pooled``: one model on the other sites' training rows pooled;
* ``federated-internal``: the study's federated model, which that site helped train;
* ``local``: the site's own model; ``pooled``: all sites' training rows pooled (internal).

Rows (DESIGN.md's format plus ``site``, ``lo``, ``hi``): one per dataset, held-out site,
method and metric (``auroc``, ``accuracy``, ``calibration_slope``, ``ece``; and for
``leave-one-site-out`` the site's ``no_information_rate``, the accuracy of always predicting its
majority class, beside every accuracy). ``mean`` and ``sd`` are over training seeds (``n``;
the train/test split is fixed: FLamby's for heart disease, seed 0 for eICU); ``lo``/``hi`` are
the site's 95 % interval from its test rows (percentile bootstrap, 200 resamples, for AUROC and
accuracy; Wald ``slope -/+ 1.96 SE`` for the calibration slope; none for ECE), averaged over
seeds. Site ``mean`` rows average the held-out sites; site ``random-effects`` rows give the
DerSimonian-Laird random-effects AUROC and calibration slope across sites with their 95 %
interval (``notes``: tau², I², the prediction interval). The site summaries come from
:mod:`fedcare.evaluation.clinical` (issue 15's clinical validation); without its calibration
the calibration rows are left out.

Usage: ``python benchmarks/clinical.py [--seeds N] [--only DATASET]``; writes
``benchmarks/results/clinical.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.records.study import StudyConfig
from fedcare.simulation.loso import entry_measures
from fedcare.simulation.run import run_simulation
from results_file import write_rows

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
RESULTS = HERE / "results" / "clinical.json"

DATASETS = {"heart-disease": "heart-disease.yaml", "eicu": "eicu.yaml"}
DESCRIPTIONS = {
    "heart-disease": "4 hospitals (Cleveland, Hungary, Switzerland, VA Long Beach), FLamby's split",
    "eicu": "eICU demo in-hospital mortality, sites = the 4 US census regions (split: region)",
}
METRICS = {
    "auroc": "AUROC",
    "accuracy": "accuracy",
    "calibration_slope": "slope",
    "ece": "ECE",
    "no_information_rate": "accuracy",  # of the held-out site's test rows (leave-one-site-out)
}
METHODS = (
    "leave-one-site-out",
    "leave-one-site-out-pooled",
    "federated-internal",
    "local",
    "pooled",
)
#: Methods whose meta-analysis comes from the leave-one-site-out summary, by its model name.
LOSO_KINDS = {"leave-one-site-out": "federated", "leave-one-site-out-pooled": "pooled"}
LOSO_KINDS["local"] = "local"
Z95 = 1.959964

Figure = tuple[float, float | None, float | None]
#: (dataset, method, site, metric) -> seed -> (value, lo, hi).
Figures = dict[tuple[str, str, str, str], dict[int, Figure]]
#: (dataset, method, metric) -> one random-effects meta-analysis per seed.
Metas = dict[tuple[str, str, str], list[Mapping[str, Any]]]


def study_for(dataset: str, seed: int) -> StudyConfig:
    """The dataset's example study with leave-one-site-out, local and pooled baselines."""
    study = StudyConfig.from_yaml(EXAMPLES / DATASETS[dataset])
    return study.with_overrides(
        seed=seed,
        validation={"leave_one_site_out": True, "bootstrap": 200},
        baselines={"local": True, "pooled": True, "cross_site": False},
    )


def site_entries(results: Mapping[str, Any]) -> dict[str, Mapping[str, Mapping[str, Any]]]:
    """Each method's entries (site summary + evaluation) by site, on that site's test rows."""
    loso = results["leave_one_site_out"]["sites"]
    validation = results.get("validation") or {}
    out: dict[str, Mapping[str, Mapping[str, Any]]] = {
        method: {s: e[kind] for s, e in loso.items()} for method, kind in LOSO_KINDS.items()
    }
    for method, label in (("federated-internal", "federated"), ("pooled", "pooled")):
        out[method] = (validation.get(label) or {}).get("per_site") or {}
    return {m: out[m] for m in METHODS}


def _interval(entry: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]:
    if metric == "calibration_slope":
        cal = entry.get("calibration") or {}
        slope, se = cal.get("slope"), cal.get("slope_se")
        if slope is None or se is None:
            return None, None
        return slope - Z95 * se, slope + Z95 * se
    block = (entry.get("metrics") or {}).get(metric)
    if not isinstance(block, Mapping):
        return None, None
    return block.get("lo"), block.get("hi")


def collect(
    dataset: str, seed: int, results: Mapping[str, Any], figures: Figures, metas: Metas
) -> None:
    """Add one seed's per-site figures and random-effects estimates to ``figures`` and the
    meta-analyses behind the latter to ``metas``."""
    for method, entries in site_entries(results).items():
        for site, entry in entries.items():
            measures = entry_measures(entry)
            nir = entry.get("no_information_rate")
            if method == "leave-one-site-out" and isinstance(nir, float):
                measures["no_information_rate"] = nir
            for metric in METRICS:
                if metric in measures:
                    key = (dataset, method, site, metric)
                    figures[key][seed] = (measures[metric], *_interval(entry, metric))
    summary = results["leave_one_site_out"]["summary"]
    validation = results.get("validation") or {}
    for method in METHODS:
        if method in LOSO_KINDS:
            meta = summary[LOSO_KINDS[method]].get("meta") or {}
        else:
            label = "federated" if method == "federated-internal" else "pooled"
            meta = ((validation.get(label) or {}).get("overall") or {}).get("meta") or {}
        for metric in ("auroc", "calibration_slope"):
            m = meta.get(metric) or {}
            if m.get("random") is not None:
                key = (dataset, method, "random-effects", metric)
                figures[key][seed] = (m["random"], m.get("lo"), m.get("hi"))
                metas[(dataset, method, metric)].append(m)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(kept) if kept else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def row(
    dataset: str,
    method: str,
    site: str,
    metric: str,
    values: Sequence[Figure],
    notes: str,
) -> dict[str, Any]:
    points = [v[0] for v in values]
    return {
        "benchmark": "clinical",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": _round(statistics.mean(points)),
        "sd": round(statistics.stdev(points), 4) if len(points) > 1 else 0.0,
        "n": len(points),
        "unit": METRICS[metric],
        "notes": notes,
        "site": site,
        "lo": _round(_mean([v[1] for v in values])),
        "hi": _round(_mean([v[2] for v in values])),
    }


def rows_of(figures: Figures, metas: Metas, seconds: Mapping[str, float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    datasets = list(dict.fromkeys(k[0] for k in figures))
    for dataset in datasets:
        sites = list(dict.fromkeys(k[2] for k in figures if k[0] == dataset))
        sites = [s for s in sites if s != "random-effects"]
        base = f"{DESCRIPTIONS[dataset]}; examples/{DATASETS[dataset]}"
        for method in METHODS:
            for site in sites:
                for metric in METRICS:
                    values = list((figures.get((dataset, method, site, metric)) or {}).values())
                    if values:
                        notes = f"{base}; held-out site {site}" if method in LOSO_KINDS else base
                        rows.append(row(dataset, method, site, metric, values, notes))
            for metric in METRICS:  # per seed, the mean over the sites where it is defined
                by_site = [figures.get((dataset, method, s, metric)) or {} for s in sites]
                seeds = sorted({seed for found in by_site for seed in found})
                means: list[Figure] = [
                    (statistics.mean(f[seed][0] for f in by_site if seed in f), None, None)
                    for seed in seeds
                ]
                if means:
                    least = min(sum(seed in f for f in by_site) for seed in seeds)
                    notes = f"{base}; unweighted mean over the sites"
                    if least < len(sites):
                        notes += f" where it is defined (at least {least} of {len(sites)})"
                    rows.append(row(dataset, method, "mean", metric, means, notes))
            for metric in ("auroc", "calibration_slope"):
                values = list(
                    (figures.get((dataset, method, "random-effects", metric)) or {}).values()
                )
                if not values:
                    continue
                found = metas[(dataset, method, metric)]
                tau2, i2 = (
                    _mean([m.get("tau2") for m in found]),
                    _mean([m.get("i2") for m in found]),
                )
                pi = (
                    _mean([m.get("pi_lo") for m in found]),
                    _mean([m.get("pi_hi") for m in found]),
                )
                notes = (
                    f"{base}; DerSimonian-Laird random effects across the {len(sites)} sites"
                    f"{' (logit scale)' if metric == 'auroc' else ''}: tau2 {_fmt(tau2)}, "
                    f"I2 {_fmt(i2)}, 95% prediction interval [{_fmt(pi[0])}, {_fmt(pi[1])}]"
                )
                rows.append(row(dataset, method, "random-effects", metric, values, notes))
        rows.append(
            {
                "benchmark": "clinical",
                "dataset": dataset,
                "method": "all",
                "metric": "seconds",
                "mean": round(seconds[dataset], 1),
                "sd": 0.0,
                "n": 1,
                "unit": "s",
                "notes": "wall time of all seeds (normal run + leave-one-site-out)",
                "site": "",
                "lo": None,
                "hi": None,
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        table = Table(title=f"clinical: {dataset}", title_justify="left")
        for col in ("held-out site", "method", *METRICS):
            table.add_column(col, justify="left" if col in ("held-out site", "method") else "right")
        cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for r in rows:
            if r["dataset"] == dataset and r["metric"] in METRICS:
                cells[(r["site"], r["method"])][r["metric"]] = cell(r)
        for (site, method), by_metric in cells.items():
            table.add_row(site, method, *(by_metric.get(m, "") for m in METRICS))
        console.print(table)


def cell(r: Mapping[str, Any]) -> str:
    """``mean [lo, hi]`` (or ``mean ± sd`` without an interval)."""
    if r["mean"] is None:
        return "n/a"
    if r.get("lo") is not None and r.get("hi") is not None:
        return f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
    return f"{r['mean']:.3f} ± {r['sd']:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="training seeds 0..N-1")
    parser.add_argument("--only", choices=sorted(DATASETS), default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    figures: Figures = defaultdict(dict)
    metas: Metas = defaultdict(list)
    seconds: dict[str, float] = {}
    for dataset in [args.only] if args.only else list(DATASETS):
        start = time.perf_counter()
        for seed in range(args.seeds):
            results = run_simulation(study_for(dataset, seed))
            collect(dataset, seed, results, figures, metas)
        seconds[dataset] = time.perf_counter() - start
        print(f"  {dataset}: {args.seeds} seeds in {seconds[dataset]:.1f} s", flush=True)
    rows = rows_of(figures, metas, seconds)
    print_table(rows)
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
