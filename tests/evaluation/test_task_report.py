"""The round aggregates, the cross-site matrix and the report carry whatever metrics a task has
(issue 13, item 1): a regression study's mae/rmse/r2 end up in the report, and the EXAM summary
says that lower is better for an error."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.evaluation.metrics import compute_metrics
from fedcare.evaluation.report import render_report
from fedcare.evaluation.summary import cross_site_matrix, exam_summary, summarize_sites
from fedcare.records.tasks import METRICS_BY_TASK

SITES = ["a", "b", "c"]


def _site_metrics(seed: int, noise: float) -> dict[str, dict[str, float]]:
    out = {}
    for i, site in enumerate(SITES):
        rng = np.random.default_rng(seed * 10 + i)
        y = rng.normal(5.0, 2.0, size=30 + 10 * i)
        data = Dataset(X=np.zeros((y.size, 1)), y=y)
        out[site] = compute_metrics("regression", data, y + rng.normal(0, noise, y.size))
    return out


def _evaluation(seed: int, noise: float) -> dict[str, Any]:
    per_site = _site_metrics(seed, noise)
    return {"per_site": per_site, **summarize_sites(per_site)}


def _results() -> dict[str, Any]:
    finals = {"federated": _evaluation(1, 0.5), "pooled": _evaluation(2, 0.4)}
    finals.update({f"local-{s}": _evaluation(3 + i, 1.0) for i, s in enumerate(SITES)})
    cross = cross_site_matrix(finals, SITES, lambda r, s: r["per_site"][s], metric="mae")
    history = [{"round": 1, "evaluate": finals["federated"]}]
    return {
        "study": {"name": "los", "dataset": "eicu", "strategy": "fedavg", "rounds": 1},
        "task": "regression",
        "metrics": list(METRICS_BY_TASK["regression"]),
        "sites": SITES,
        "history": history,
        "final": finals["federated"],
        "baselines": {
            "local": {s: finals[f"local-{s}"] for s in SITES},
            "pooled": finals["pooled"],
        },
        "cross_site": {k: v for k, v in cross.items() if k != "cells"},
        "summary": exam_summary(cross),
    }


def test_round_aggregate_and_exam_summary_carry_regression_metrics() -> None:
    ev = _evaluation(1, 0.5)
    assert list(ev["weighted"]) == ["mae", "rmse", "r2", "n"]
    assert ev["skipped"] == {"mae": 0, "rmse": 0, "r2": 0}
    n = {s: ev["per_site"][s]["n"] for s in SITES}
    expected = sum(n[s] * ev["per_site"][s]["mae"] for s in SITES) / sum(n.values())
    assert abs(ev["weighted"]["mae"] - expected) < 1e-12
    summary = _results()["summary"]
    assert summary["metric"] == "mae" and summary["lower_is_better"] is True
    assert summary["own_site"]["absolute"] < 0  # the federated model errs less: an improvement
    binary = {"metric": "auroc", "models": ["federated", "local-a"], "sites": ["a"]}
    assert exam_summary({**binary, "matrix": [[0.8], [0.7]]})["lower_is_better"] is False


def test_report_shows_the_metrics_of_a_regression_study() -> None:
    html = render_report(_results(), generated_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    start = html.index('id="final-metrics"')
    final = html[start : html.index("</section>", start)]
    headers = re.findall(r"<th>([^<]+)</th>", final)
    assert headers == ["site", "mae", "rmse", "r2", "n"]
    assert "mae (weighted)" in html and "r2 (unweighted)" in html
    assert "EXAM summary (mae)" in html
    assert "Lower mae is better" in html
