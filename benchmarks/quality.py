"""Quality benchmark: every strategy against each site alone and all data pooled, over seeds.

Runs the protocols of ``quality_protocols.py`` (FLamby's Fed-Heart-Disease protocol; heart
disease, TCGA-BRCA and eICU with fedcare's practice; PneumoniaMNIST with a small CNN) through the
library (``quality_harness.run_method`` -> ``train_on_grid``, the one round loop), prints a
mean +/- SD table per dataset and the targets met or missed, and writes
``benchmarks/results/quality.json``: one row per figure,
``{"benchmark", "dataset", "method", "metric", "mean", "sd", "n", "unit", "notes"}``, where ``n``
is the number of seeds and the SD is over seeds (``ddof=1``).

Usage: ``python benchmarks/quality.py [--only DATASET] [--seeds N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcare.data.base import Dataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.evaluation.summary import summarize_sites
from fedcare.records.study import StudyConfig
from quality_harness import MethodRun, merge, run_method, union_site
from quality_protocols import PROTOCOLS, Protocol
from quality_targets import Target, check_targets, exam_rows

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
RESULTS = HERE / "results" / "quality.json"


@dataclass
class ProtocolResult:
    """All runs of one protocol: by method, one :class:`MethodRun` per seed."""

    protocol: Protocol
    runs: dict[str, list[MethodRun]] = field(default_factory=lambda: defaultdict(list))
    variants: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    sites: list[str] = field(default_factory=list)
    seconds: float = 0.0


def base_study(protocol: Protocol) -> dict[str, Any]:
    """The protocol's example study as a dict, with its dataset options applied."""
    study = StudyConfig.from_yaml(EXAMPLES / protocol.example).model_dump()
    study["dataset"]["options"] = {**study["dataset"]["options"], **protocol.dataset_options}
    return study


def methods_of(protocol: Protocol, site_ids: Sequence[str]) -> list[str]:
    methods = list(protocol.methods)
    if protocol.locals:
        methods += [f"local-{s}" for s in site_ids]
    if protocol.pooled:
        methods.append("pooled")
    return methods


def study_for(protocol: Protocol, base: Mapping[str, Any], method: str) -> dict[str, Any]:
    if method in protocol.methods:
        return merge(base, protocol.methods[method])
    return merge(base, protocol.baseline)


def primary(run: MethodRun, metric: str) -> float:
    """The unweighted mean of ``metric`` over the sites where it is defined."""
    return float(summarize_sites(run.per_site)["unweighted"][metric])


def run_protocol(protocol: Protocol, seeds: Sequence[int]) -> ProtocolResult:
    start = time.perf_counter()
    base = base_study(protocol)
    ds = load_dataset(base["dataset"]["name"], **base["dataset"]["options"])
    extra: dict[str, SiteData] = {}
    holdout = ds.extra.get("holdout")
    if protocol.holdout and isinstance(holdout, Dataset):
        extra["holdout"] = SiteData("holdout", train=holdout, test=holdout)
    if protocol.union:
        extra["union"] = union_site(ds)
    pooled_site = protocol.pooled_site(ds) if protocol.pooled_site else None
    result = ProtocolResult(protocol, sites=list(ds.site_ids))
    label = protocol.key + protocol.suffix
    for method in methods_of(protocol, ds.site_ids):
        t0 = time.perf_counter()
        study = study_for(protocol, base, method)
        for seed in seeds:
            run = run_method(ds, study, method, seed, pooled_site=pooled_site, extra_sites=extra)
            result.runs[method].append(run)
        values = [primary(r, protocol.metric) for r in result.runs[method]]
        print(
            f"  {label:22s} {method:24s} {protocol.metric} {_fmt(values)}"
            f"  ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    for name, method, overrides in protocol.variants:
        study = merge(study_for(protocol, base, method), overrides)
        for seed in seeds:
            run = run_method(ds, study, method, seed, pooled_site=pooled_site)
            result.variants[method].append((name, primary(run, protocol.metric)))
    result.seconds = time.perf_counter() - start
    return result


def _fmt(values: Sequence[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.3f} ± {sd:.3f} (n={len(values)})"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return math.nan, math.nan
    return statistics.mean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0


def row(
    dataset: str, method: str, metric: str, values: Sequence[float], notes: str
) -> dict[str, Any]:
    mean, sd = mean_sd(values)
    unit = metric.split("-")[0].split("@")[0]
    return {
        "benchmark": "quality",
        "dataset": dataset,
        "method": method,
        "metric": metric,
        "mean": None if math.isnan(mean) else round(mean, 4),
        "sd": None if math.isnan(sd) else round(sd, 4),
        "n": sum(math.isfinite(v) for v in values),
        "unit": unit,
        "notes": notes,
    }


def settings(protocol: Protocol, method: str) -> str:
    """A short description of a method's non-default settings for the notes."""
    over = protocol.methods.get(method) or protocol.baseline
    parts = []
    if "strategy" in over and over["strategy"].get("options"):
        parts.append("options " + json.dumps(over["strategy"]["options"], sort_keys=True))
    for key in ("training", "rounds", "model"):
        if key in over:
            parts.append(f"{key} {json.dumps(over[key], sort_keys=True)}")
    return "; ".join(parts) or f"settings of examples/{protocol.example}"


def rows_of(result: ProtocolResult) -> list[dict[str, Any]]:
    p = result.protocol
    rows = []
    for method, runs in result.runs.items():
        notes = [settings(p, method)]
        if p.suffix == "@hospital":
            defined = [
                sum(math.isfinite(v.get(p.metric, math.nan)) for v in r.per_site.values())
                for r in runs
            ]
            notes.append(f"{p.metric} defined at {min(defined)} of {len(result.sites)} hospitals")
        for name, value in _variant_summary(result.variants.get(method, [])):
            notes.append(f"{name}: {value}")
        if method == p.best:
            notes.append("best strategy (chosen on validation data)")
        values = [primary(r, p.metric) for r in runs]
        rows.append(row(p.key, method, p.metric + p.suffix, values, "; ".join(notes)))
        for name in sorted({k for r in runs for k in r.extra}):
            values = [r.extra[name].get(p.metric, math.nan) for r in runs]
            rows.append(row(p.key, method, f"{p.metric}-{name}{p.suffix}", values, notes[0]))
    return rows


def _variant_summary(pairs: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, value in pairs:
        by_name[name].append(value)
    return [(name, _fmt(values)) for name, values in by_name.items()]


def print_table(rows: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        table = Table(title=f"quality: {dataset}", title_justify="left")
        for col in ("method", "metric", "mean ± SD", "n", "notes"):
            table.add_column(col, overflow="fold", max_width=80 if col == "notes" else None)
        for r in rows:
            if r["dataset"] == dataset:
                value = "n/a" if r["mean"] is None else f"{r['mean']:.3f} ± {r['sd']:.3f}"
                table.add_row(r["method"], r["metric"], value, str(r["n"]), r["notes"])
        console.print(table)
    table = Table(title="targets", title_justify="left")
    for col in ("dataset", "target", "result", "detail"):
        table.add_column(col, overflow="fold")
    for t in targets:
        table.add_row(t.dataset, t.description, "MET" if t.met else "MISSED", t.detail)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    keys = sorted({p.key for p in PROTOCOLS})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=keys, help="run one dataset")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 for every dataset")
    parser.add_argument("--quick", action="store_true", help="2 seeds (1 for PneumoniaMNIST)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    targets: list[Target] = []
    for protocol in PROTOCOLS:
        if args.only not in (None, protocol.key):
            continue
        n = args.seeds or (min(2, protocol.seeds) if args.quick else protocol.seeds)
        if args.quick and protocol.holdout:
            n = 1
        print(f"{protocol.key}{protocol.suffix}: {protocol.description}", flush=True)
        result = run_protocol(protocol, range(n))
        new_rows = rows_of(result) + exam_rows(protocol, result.runs, result.sites)
        found = check_targets(protocol, new_rows)
        for t in found:
            for r in new_rows:
                if r["method"] == t.method and r["metric"] == t.metric:
                    verdict = "MET" if t.met else "MISSED"
                    r["notes"] += f"; target {t.description}: {verdict} [{t.detail}]"
        rows += new_rows
        targets += found
        print(f"  ({result.seconds:.0f} s)", flush=True)
    print_table(rows, targets)
    total = time.perf_counter() - start
    if args.only and args.out.exists():  # keep the other datasets' rows
        kept = [r for r in json.loads(args.out.read_text()) if r["dataset"] != args.only]
        rows = kept + rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out} ({len(rows)} rows); total {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
