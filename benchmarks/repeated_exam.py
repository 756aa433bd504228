"""The EXAM-style summary over repeated splits, from the stored per-site scores of each run.

For one run (a split), one training seed and a federated method (``fedavg`` or
``best-on-validation``), the cross-site matrix is read from the run's scores: the federated
model's and every site's tuned local model's metric on each site's test split (each local model
is scored on every site, see ``repeated_protocol.run_split``). It goes through
:func:`fedcare.evaluation.summary.exam_summary` (Dayan et al. 2021), as ``quality_targets``
does on one split:

* **own site**: per site, the federated model minus that site's local model on the site's own
  test split, averaged over the sites where both are defined (``absolute``; ``relative``
  divides by the local figure first);
* **generalizability**: the federated model's mean over all sites minus the mean, over sites,
  of each local model on the *other* sites.

Each split's figure is the mean over its training seeds; rows (``repeated_stats.row``) carry the
mean over splits and the 95% t-interval, as every repeated row does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from fedcare.evaluation.summary import exam_summary
from repeated_stats import row

__all__ = ["EXAM_FIGURES", "exam_of", "exam_rows", "exam_split_figures"]

#: (part of exam_summary, key, metric-name tail) of each figure reported.
EXAM_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("own_site", "local", "own-site-local"),
    ("own_site", "federated", "own-site-federated"),
    ("own_site", "absolute", "own-site-absolute"),
    ("own_site", "relative", "own-site-relative"),
    ("generalizability", "local", "generalizability-local"),
    ("generalizability", "federated_all_sites", "generalizability-federated"),
    ("generalizability", "absolute", "generalizability-absolute"),
    ("generalizability", "relative", "generalizability-relative"),
)


def exam_of(run: Mapping[str, Any], method: str, metric: str, seed: int) -> dict[str, Any]:
    """``exam_summary`` of ``method`` against the run's tuned local models at seed index
    ``seed`` (the local models of quality.py's settings are left out)."""
    scores = run["scores"]
    sites = list(scores[method][seed]["sites"])
    models = {"federated": scores[method][seed]["sites"]}
    for site in sites:
        local = scores.get(f"local-{site}")
        if local is not None:
            models[f"local-{site}"] = local[seed]["sites"]
    matrix = [
        [float(by_site.get(s, {}).get(metric, math.nan)) for s in sites]
        for by_site in models.values()
    ]
    cross = {"metric": metric, "models": list(models), "sites": sites, "matrix": matrix}
    return exam_summary(cross)


def exam_split_figures(
    runs: Sequence[Mapping[str, Any]], method: str, metric: str
) -> dict[str, list[float]]:
    """Per figure (metric-name tail): one value per split, the mean over its finite seeds."""
    out: dict[str, list[float]] = {tail: [] for _, _, tail in EXAM_FIGURES}
    for run in runs:
        summaries = [exam_of(run, method, metric, i) for i in range(len(run["seeds"]))]
        for part, key, tail in EXAM_FIGURES:
            values = [float(s[part][key]) for s in summaries]
            kept = [v for v in values if math.isfinite(v)]
            out[tail].append(statistics.mean(kept) if kept else math.nan)
    return out


def _own_sites(runs: Sequence[Mapping[str, Any]], method: str, metric: str) -> str:
    counts = [exam_of(run, method, metric, 0)["own_site"]["n_sites"] for run in runs]
    total = len(runs[0]["scores"][method][0]["sites"])
    if min(counts) == total:
        return ""
    return f"; own-site figures over the sites where {metric} is defined: {min(counts)} to " + (
        f"{max(counts)} of {total} per split"
    )


def exam_rows(
    dataset: str,
    runs: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    methods: Sequence[str] = ("fedavg", "best-on-validation"),
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "",
) -> list[dict[str, Any]]:
    """Rows ``<metric>-exam-<figure>`` of each method and metric over the runs (splits);
    ``reference`` (quality.py's split, not in the interval) is quoted in the notes."""
    head = (
        f"EXAM summary (Dayan et al. 2021, exam_summary) per split and seed from the stored "
        f"per-site scores; mean over {len(runs)} splits of the mean over "
        f"{len(runs[0]['seeds'])} seeds; 95% t-interval"
    )
    out = []
    for method in methods:
        for metric in metrics:
            figures = exam_split_figures(runs, method, metric)
            alone = {} if reference is None else exam_split_figures([reference], method, metric)
            note = head + _own_sites(runs, method, metric)
            for _, key, tail in EXAM_FIGURES:
                unit = "fraction" if key == "relative" else metric
                r = row(dataset, method, f"{metric}-exam-{tail}", figures[tail], unit, note)
                if alone:
                    r["notes"] += (
                        f"; {reference_label} alone (not in the interval): {alone[tail][0]:.4f}"
                    )
                out.append(r)
    return out
