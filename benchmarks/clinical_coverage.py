"""Coverage of the clinical validation report's AUROC intervals, by simulation.

A known data-generating process: in every site a negative row's score is ``N(0, 1)`` and a
positive row's ``N(mu, 1)`` with ``mu = sqrt(2) Phi^-1(A)``, so the true AUROC is ``A`` (0.8 by
default); the model reports ``p = expit(score - 0.5)``, a monotone map, so the AUROC of ``p`` is
``A`` too. Four sites with the sizes and prevalences of the UCI heart-disease test sets
(Cleveland 60 rows, 45 % diseased; Hungary 59, 36 %; Switzerland 16, 94 %; Long Beach 30, 75 %),
and a variant with every site ten times larger; the first and last 5 % of a site's rows (at
least one each) are fixed positive and negative, so every site has both classes (the
class-conditional score distributions, hence the true AUROC, are unchanged). Each replicate
draws fresh rows, runs each site's :func:`fedcare.evaluation.clinical.site_summary` (200
bootstrap resamples) and the coordinator's :func:`fedcare.evaluation.clinical.combine_sites`,
and records whether each nominal 95 % interval contains the true AUROC:

* ``delong-binned``: the pooled AUROC's interval from the 100-bin score histograms (DeLong
  variance of the binned placements, logit scale), what the report shows overall;
* ``delong-binned, wald scale``: the same variance, ``A -/+ z se`` without the logit map, for
  comparison;
* ``site bootstrap (cleveland)``: Cleveland's own percentile bootstrap interval;
* ``meta random-effects``: the DerSimonian–Laird interval of the mean site AUROC.

Binning ties the scores inside a bin, so the binned AUROC's population value differs slightly
from ``A``; it is printed (``binned population AUROC``, by numerical integration) and the
coverage of that value is in the notes. Rows: ``metric`` ``auroc_ci_coverage`` (mean = share
of replicates covering, sd = SD of the 0/1 indicator, n = replicates; Monte Carlo SE =
sd / sqrt(n)) and ``auroc_ci_width`` (mean width). Writes
``benchmarks/results/clinical_coverage.json``. Usage:
``python benchmarks/clinical_coverage.py [--replicates N] [--auroc A] [--seed S]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from fedcare.evaluation.clinical import combine_sites, site_summary
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "clinical_coverage.json"

#: (site, test rows, prevalence) of the UCI heart-disease test sets.
SITES: tuple[tuple[str, int, float], ...] = (
    ("cleveland", 60, 0.45),
    ("hungary", 59, 0.36),
    ("switzerland", 16, 0.94),
    ("long-beach", 30, 0.75),
)
SPEC = {"threshold": 0.5, "bins": 10, "curve_bins": 100, "bootstrap": 200, "confidence": 0.95}
OFFSET = -0.5

Row = dict[str, Any]


def binned_population_auroc(mu: float, k: int) -> float:
    """The AUROC of the binormal scores after binning ``p = expit(s + OFFSET)`` into ``k``
    equal-width bins (ties within a bin count 1/2), by exact normal probabilities."""
    edges = np.linspace(0.0, 1.0, k + 1)[1:-1]
    cuts = np.log(edges / (1.0 - edges)) - OFFSET  # score edges
    cdf_neg = np.r_[0.0, norm.cdf(cuts), 1.0]
    cdf_pos = np.r_[0.0, norm.cdf(cuts - mu), 1.0]
    neg, pos = np.diff(cdf_neg), np.diff(cdf_pos)
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)))


def one_replicate(
    rng: np.random.Generator, mu: float, scale: int, confidence: float
) -> dict[str, tuple[float | None, float | None]]:
    """The intervals ``(lo, hi)`` of one simulated federation, by method."""
    per_site = {}
    for name, n, prevalence in SITES:
        rows = n * scale
        y = (rng.random(rows) < prevalence).astype(int)
        y[: max(1, rows // 20)] = 1  # every site keeps both classes
        y[-max(1, rows // 20) :] = 0
        score = rng.normal(0.0, 1.0, rows) + mu * y
        per_site[name] = site_summary("binary", y, expit(score + OFFSET), spec=SPEC, rng=rng)
    overall = combine_sites(per_site, SPEC)
    auc = overall["metrics"]["auroc"]
    z = float(norm.ppf(0.5 + confidence / 2.0))
    wald = (auc["value"] - z * auc["se"], auc["value"] + z * auc["se"]) if auc["se"] else None
    site = per_site["cleveland"]["metrics"]["auroc"]
    meta = overall["meta"]["auroc"]
    return {
        "delong-binned": (auc["lo"], auc["hi"]),
        "delong-binned, wald scale": wald or (None, None),
        "site bootstrap (cleveland)": (site["lo"], site["hi"]),
        "meta random-effects": (meta["lo"], meta["hi"]),
    }


def run(
    replicates: int, auroc: float, scale: int, seed: int
) -> tuple[dict[str, list[tuple[float | None, float | None]]], float]:
    mu = math.sqrt(2.0) * float(norm.ppf(auroc))
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[float | None, float | None]]] = {}
    for _ in range(replicates):
        for method, ci in one_replicate(rng, mu, scale, SPEC["confidence"]).items():
            out.setdefault(method, []).append(ci)
    return out, binned_population_auroc(mu, int(SPEC["curve_bins"]))


def rows_for(
    intervals: dict[str, list[tuple[float | None, float | None]]],
    auroc: float,
    binned: float,
    scale: int,
) -> list[Row]:
    sizes = ", ".join(f"{n * scale}" for _, n, _ in SITES)
    dataset = f"simulated binormal AUROC {auroc}, 4 sites ({sizes} rows, heart-disease test sets"
    dataset += ")" if scale == 1 else f" x{scale})"
    rows: list[Row] = []
    for method, cis in intervals.items():
        defined = [(lo, hi) for lo, hi in cis if lo is not None and hi is not None]
        covered = np.array([lo <= auroc <= hi for lo, hi in defined], dtype=float)
        covered_binned = np.mean([lo <= binned <= hi for lo, hi in defined])
        widths = np.array([hi - lo for lo, hi in defined])
        r = covered.size
        mc_se = math.sqrt(covered.mean() * (1 - covered.mean()) / r) if r else float("nan")
        notes = (
            f"nominal 0.95; {r} replicates with an interval of {len(cis)}; Monte Carlo SE "
            f"{mc_se:.4f}; true AUROC {auroc}; binned population AUROC {binned:.4f} "
            f"(covered {covered_binned:.3f})"
        )
        common = {"benchmark": "clinical_coverage", "dataset": dataset, "method": method, "n": r}
        rows.append(
            {
                **common,
                "metric": "auroc_ci_coverage",
                "mean": round(float(covered.mean()), 4),
                "sd": round(float(covered.std(ddof=1)), 4),
                "unit": "share of replicates",
                "notes": notes,
            }
        )
        rows.append(
            {
                **common,
                "metric": "auroc_ci_width",
                "mean": round(float(widths.mean()), 4),
                "sd": round(float(widths.std(ddof=1)), 4),
                "unit": "AUROC",
                "notes": "mean width of the nominal 95 % interval",
            }
        )
    return rows


def print_table(rows: Sequence[Row]) -> None:
    print(f"{'dataset':<78} {'method':<28} {'metric':<18} {'mean':>7} {'n':>5}")
    for r in rows:
        print(
            f"{r['dataset']:<78} {r['method']:<28} {r['metric']:<18} {r['mean']:>7.4f} {r['n']:>5}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--auroc", type=float, default=0.8)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    start, cpu = time.perf_counter(), time.process_time()
    for scale in args.scales:
        intervals, binned = run(args.replicates, args.auroc, scale, args.seed + scale)
        rows += rows_for(intervals, args.auroc, binned, scale)
    print_table(rows)
    print(f"{time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
