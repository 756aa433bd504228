"""One dataset over repeated splits: tune on validation rows, train at every seed, summarize.

A :class:`Spec` says how to load the dataset at a split seed, which strategies run (with the
settings of ``tuning.json``), the grid the local and pooled baselines search on validation data
and the metrics. :func:`run_split` does one repetition (see ``repeated.py`` for the protocol);
:func:`runs_of` runs the missing ones and appends each to the dataset's ``.jsonl`` file so that a
run can be stopped and resumed; :func:`rows_of` turns the runs into result rows.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import FederatedDataset
from fedcare.evaluation.summary import summarize_sites
from quality import base_study, study_for
from quality_harness import merge, run_method, union_site, validation_split
from quality_protocols import Protocol
from repeated_stats import difference_row, row, split_means

__all__ = ["Extra", "Spec", "rows_of", "run_split", "runs_of", "tune"]

TUNE_SEED = 100
_FIXED = "-quality-settings"
#: Extra methods of a dataset: (full data, validation data) -> (choices, scores by method).
Extra = Callable[
    [FederatedDataset, FederatedDataset], tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]
]


@dataclass(frozen=True)
class Spec:
    """How one dataset is run over repeated splits."""

    key: str
    protocol: Protocol
    protocol_name: str
    load: Callable[[int | None], FederatedDataset]
    metrics: tuple[str, ...]
    grid: tuple[dict[str, Any], ...]
    runs_file: Path
    #: The split ``quality.py`` scores (quoted in the notes, outside the intervals) and its name.
    reference: int | None
    reference_label: str
    #: Splits run by default (``--splits`` overrides).
    splits: int = 30
    strategies: tuple[str, ...] = ("fedavg", "fedprox", "scaffold")
    #: Sites whose local model with quality.py's settings is also compared with FedAvg.
    fixed_pairs: tuple[str, ...] = ()
    extra: Extra | None = None
    extra_pairs: tuple[tuple[str, str], ...] = ()
    extra_notes: Mapping[str, str] = field(default_factory=dict)
    #: metric -> (label, when it is undefined at a site, why) for the notes.
    undefined: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Also score every model on all sites' test rows together (metrics ``<metric>-union``).
    union: bool = False
    #: Also run the local and pooled models with quality.py's fixed settings.
    quality_settings: bool = True
    #: Add the EXAM-style summary rows (``repeated_exam.py``).
    exam: bool = False

    @property
    def reported(self) -> tuple[str, ...]:
        """The metrics of the rows: ``metrics``, then their ``-union`` forms where scored."""
        return self.metrics + (tuple(f"{k}-union" for k in self.metrics) if self.union else ())

    def split_seeds(self, n: int) -> list[int]:
        """The first ``n`` split seeds 0, 1, ... other than the reference split."""
        out: list[int] = []
        k = 0
        while len(out) < n:
            if k != self.reference:
                out.append(k)
            k += 1
        return out


def _loss(ds: FederatedDataset, study: Mapping[str, Any], method: str, site: str | None) -> float:
    per_site = run_method(ds, study, method, TUNE_SEED).per_site
    if site is not None:
        return float(per_site[site]["loss"])
    return float(summarize_sites(per_site)["unweighted"]["loss"])


def _lowest(losses: Sequence[float]) -> int | None:
    """The position of the lowest finite loss (the first of equal ones); None if none is."""
    finite = [(v, i) for i, v in enumerate(losses) if math.isfinite(v)]
    return min(finite)[1] if finite else None


def tune(spec: Spec, val: FederatedDataset, base: Mapping[str, Any]) -> dict[str, Any]:
    """Per baseline the grid entry of lowest validation loss; the strategy of lowest loss.

    The pooled model is tuned by the mean validation loss over sites, each local model by the
    loss at its own site; where no entry has a finite loss (no event in a site's validation
    rows), quality.py's fixed setting is kept, recorded as ``"fixed"``.
    """
    chosen: dict[str, Any] = {}
    for method in ("pooled", *(f"local-{s}" for s in val.site_ids)):
        site = method.removeprefix("local-") if method != "pooled" else None
        study = study_for(spec.protocol, base, method)
        best = _lowest([_loss(val, merge(study, over), method, site) for over in spec.grid])
        chosen[method] = "fixed" if best is None else spec.grid[best]
    loss = {m: _loss(val, study_for(spec.protocol, base, m), m, None) for m in spec.strategies}
    chosen["best"] = spec.strategies[_lowest([loss[m] for m in spec.strategies]) or 0]
    return chosen


def _scores(
    metrics: Sequence[str],
    per_site: Mapping[str, Mapping[str, float]],
    extra: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    means = summarize_sites(per_site)["unweighted"]
    more = {f"{m}-{name}": float(v[m]) for name, v in (extra or {}).items() for m in metrics}
    return {
        **{m: float(means[m]) for m in metrics},
        **more,
        "sites": {s: {m: float(v[m]) for m in metrics} for s, v in per_site.items()},
    }


def _test_counts(ds: FederatedDataset) -> dict[str, list[int]]:
    """Per site: [test rows, positive (or event) test rows]."""
    return {s.site_id: [len(s.test), int(np.sum(np.asarray(s.test.y) > 0))] for s in ds.sites}


def run_split(spec: Spec, split_seed: int | None, seeds: Sequence[int]) -> dict[str, Any]:
    """Tune on validation rows, then train and test every method at every seed."""
    base = base_study(spec.protocol)
    ds = spec.load(split_seed)
    val = validation_split(ds)
    extra = {"union": union_site(ds)} if spec.union else None
    chosen = tune(spec, val, base)
    plans: dict[str, tuple[str, dict[str, Any]]] = {
        m: (m, study_for(spec.protocol, base, m)) for m in spec.strategies
    }
    for method in ("pooled", *(f"local-{s}" for s in ds.site_ids)):
        fixed = study_for(spec.protocol, base, method)
        tuned = fixed if chosen[method] == "fixed" else merge(fixed, chosen[method])
        plans[method] = (method, tuned)
        if spec.quality_settings:
            plans[f"{method}-quality-settings"] = (method, fixed)
    scores: dict[str, list[dict[str, Any]]] = {}
    for name, (method, study) in plans.items():
        done = [run_method(ds, study, method, s, extra_sites=extra) for s in seeds]
        scores[name] = [_scores(spec.metrics, r.per_site, r.extra) for r in done]
    scores["best-on-validation"] = scores[chosen["best"]]
    if spec.extra is not None:
        more, extra_scores = spec.extra(ds, val)
        chosen.update(more)
        scores.update(extra_scores)
    return {
        "split_seed": split_seed,
        "seeds": list(seeds),
        "chosen": chosen,
        "scores": scores,
        "test": _test_counts(ds),
    }


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def runs_of(
    spec: Spec, split_seeds: Sequence[int | None], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """The runs of ``split_seeds`` at ``seeds`` (stored ones; the missing ones run now)."""
    runs = [r for r in load_runs(spec.runs_file) if r["seeds"] == list(seeds)]
    done = {r["split_seed"] for r in runs}
    primary = spec.metrics[0]
    for k in split_seeds:
        if k in done:
            continue
        t0 = time.perf_counter()
        run = run_split(spec, k, seeds)
        with spec.runs_file.open("a") as f:
            f.write(json.dumps(run) + "\n")
        runs.append(run)
        done.add(k)
        mean = {m: statistics.mean(s[primary] for s in v) for m, v in run["scores"].items()}
        print(
            f"{spec.key} split {k}: {primary} fedavg {mean['fedavg']:.3f} "
            f"pooled {mean['pooled']:.3f} best {run['chosen']['best']} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    order = {k: i for i, k in enumerate(split_seeds)}
    wanted = (r for r in runs if r["split_seed"] in order)
    return sorted(wanted, key=lambda r: order[r["split_seed"]])


# ----------------------------------------------------------------------------- rows


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


def _notes(spec: Spec, runs: Sequence[Mapping[str, Any]], method: str) -> str:
    seeds = len(runs[0]["seeds"])
    head = f"mean over {len(runs)} splits of the mean over {seeds} seeds; 95% t-interval"
    if method == "best-on-validation":
        return f"{head}; strategy of lowest validation loss, chosen per split: " + _choices(
            runs, "best"
        )
    if method.endswith("-quality-settings"):
        fixed = study_for(spec.protocol, base_study(spec.protocol), "pooled")
        return f"{head}; quality.py's fixed baseline settings ({_settings(fixed)})"
    if method in spec.strategies:
        return f"{head}; settings of tuning.json (quality_protocols.{spec.protocol_name})"
    if method in spec.extra_notes:
        return f"{head}; {spec.extra_notes[method]}"
    if method == "local-mean":
        return (
            f"{head}; mean over the sites' local models (settings chosen on each site's "
            "validation rows), each scored on every site's test split"
        )
    return f"{head}; settings chosen on validation rows, per split: " + _choices(runs, method)


def _undefined(spec: Spec, runs: Sequence[Mapping[str, Any]], metric: str) -> str:
    if metric not in spec.undefined:
        return ""
    label, when, why = spec.undefined[metric]
    sites = list(runs[0]["scores"]["fedavg"][0]["sites"])
    missing = sum(
        not math.isfinite(run["scores"]["fedavg"][0]["sites"][site][metric])
        for run in runs
        for site in sites
    )
    if not missing:
        return ""
    return (
        f"; {label} averaged over the sites where it is defined (not where {when}: {missing} "
        f"site-splits of {len(runs) * len(sites)}{', ' + why if why else ''})"
    )


def _spread(values: Sequence[int]) -> str:
    return f"{min(values)} to {max(values)} (median {statistics.median(values):g})"


def _outcomes(spec: Spec, runs: Sequence[Mapping[str, Any]], metric: str) -> str:
    """For a spec scored on the union of test rows: per split, how many sites' test rows hold
    both outcomes, and how many positives all test rows hold (runs record ``test`` counts)."""
    if not spec.union or metric != spec.metrics[0] or any("test" not in r for r in runs):
        return ""
    both = [sum(0 < pos < n for n, pos in r["test"].values()) for r in runs]
    positives = [sum(pos for _, pos in r["test"].values()) for r in runs]
    return (
        f"; sites whose test rows hold both outcomes, per split: {_spread(both)} of "
        f"{len(runs[0]['test'])}; positives among all sites' test rows: {_spread(positives)}"
    )


def _with_local_mean(spec: Spec, run: Mapping[str, Any]) -> dict[str, Any]:
    """``run`` plus ``local-mean``: per seed, the mean over sites' (tuned) local models of
    their unweighted-over-sites scores (the sites' models, each scored on every test split)."""
    locals_ = [m for m in run["scores"] if m.startswith("local-") and not m.endswith(_FIXED)]
    per_seed = []
    for i in range(len(run["seeds"])):
        scores = {}
        for k in spec.reported:
            values = [run["scores"][m][i][k] for m in locals_]
            kept = [v for v in values if math.isfinite(v)]
            scores[k] = statistics.mean(kept) if kept else math.nan
        per_seed.append(scores)
    return {**run, "scores": {**run["scores"], "local-mean": per_seed}}


def rows_of(
    spec: Spec, runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of every method and paired difference; ``reference`` (quality.py's split, not in
    the intervals) is quoted in the notes."""
    runs = [_with_local_mean(spec, r) for r in runs]
    reference = None if reference is None else _with_local_mean(spec, reference)
    methods = list(runs[0]["scores"])
    methods.remove("best-on-validation")
    methods.insert(len(spec.strategies), "best-on-validation")
    out = [
        row(
            spec.key,
            m,
            k,
            split_means(runs, m, k),
            k,
            _notes(spec, runs, m) + _undefined(spec, runs, k) + _outcomes(spec, runs, k),
        )
        for m in methods
        for k in spec.reported
    ]
    sites = list(runs[0]["scores"]["fedavg"][0]["sites"])
    pairs = [("fedavg", "pooled"), ("best-on-validation", "pooled")]
    if spec.quality_settings:
        pairs += [("fedavg", "pooled-quality-settings")]
    pairs += [("fedavg", f"local-{s}") for s in sites] + [("fedavg", "local-mean")]
    pairs += [("best-on-validation", "local-mean")]
    pairs += [("fedavg", f"local-{s}-quality-settings") for s in spec.fixed_pairs]
    if spec.quality_settings:
        pairs += [("pooled", "pooled-quality-settings")]
    pairs += spec.extra_pairs
    out += [difference_row(spec.key, runs, a, b, k) for a, b in pairs for k in spec.reported]
    if reference is not None:
        for r in out:
            a, _, b = r["method"].partition(" - ")
            value = split_means([reference], a, r["metric"])[0]
            if b:
                value -= split_means([reference], b, r["metric"])[0]
            r["notes"] += f"; {spec.reference_label} alone (not in the interval): {value:.4f}"
    return out
