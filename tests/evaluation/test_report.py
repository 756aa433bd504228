"""The HTML report: self-contained, one figure per section with data, escaped, graceful."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from fedcare.evaluation.report import render_report, write_report
from fedcare.evaluation.summary import cross_site_matrix, exam_summary, summarize_sites

SITES = ["cleveland", "hungary", "switzerland", "va"]
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _per_site(rng: np.random.Generator, sites: Sequence[str], level: float) -> dict[str, Any]:
    out = {}
    for i, s in enumerate(sites):
        auroc = float("nan") if i == 2 else float(min(1.0, level + 0.1 * rng.random()))
        out[s] = {
            "accuracy": float(min(1.0, level - 0.05 + 0.1 * rng.random())),
            "auroc": auroc,
            "loss": float(1.0 - level + 0.1 * rng.random()),
            "n": 50 + 10 * i,
        }
    return out


def _evaluation(rng: np.random.Generator, sites: Sequence[str], level: float) -> dict[str, Any]:
    per_site = _per_site(rng, sites, level)
    return {"per_site": per_site, **summarize_sites(per_site)}


def _history(rng: np.random.Generator, sites: Sequence[str], rounds: int) -> list[dict[str, Any]]:
    history = []
    for r in range(1, rounds + 1):
        entry: dict[str, Any] = {
            "round": r,
            "duration_s": 0.05 + 0.01 * r,
            "fit": {"num_contributions": len(sites), "update_norm": 1.0 / r, "dp_event": {"x": 1}},
        }
        if r % 2 == 1 or r == rounds:  # some rounds without evaluation
            entry["evaluate"] = _evaluation(rng, sites, 0.6 + 0.05 * r)
        history.append(entry)
    return history


def make_results(sites: Sequence[str] = SITES, rounds: int = 5, seed: int = 0) -> dict[str, Any]:
    """A full results dict like ``fedcare simulate`` writes, with baselines and summary."""
    rng = np.random.default_rng(seed)
    history = _history(rng, sites, rounds)
    local = {s: {**_evaluation(rng, sites, 0.65), "history": []} for s in sites}
    pooled = {**_evaluation(rng, sites, 0.8), "history": []}
    finals = {"federated": history[-1]["evaluate"], "pooled": pooled}
    finals.update({f"local-{s}": local[s] for s in sites})
    cross = cross_site_matrix(
        finals, sites, lambda res, site: res["per_site"][site], metric="accuracy"
    )
    return {
        "fedcare_version": "0.1.0",
        "study": {
            "name": "heart-fedavg",
            "dataset": "heart_disease",
            "strategy": "fedavg",
            "rounds": rounds,
            "seed": seed,
            "model": {"kind": "logistic", "l2": 0.01},
        },
        "dataset": {
            "name": "UCI Heart Disease",
            "description": "Four hospitals.",
            "citation": "Janosi et al. 1988",
            "license": "CC BY 4.0",
        },
        "task": "binary",
        "metrics": ["accuracy", "auroc"],
        "sites": list(sites),
        "site_sizes": {s: {"train": 100 + i, "test": 50 + 10 * i} for i, s in enumerate(sites)},
        "history": history,
        "final": history[-1]["evaluate"],
        "baselines": {"local": local, "pooled": pooled},
        "cross_site": {k: v for k, v in cross.items() if k != "cells"},
        "summary": exam_summary(cross),
        "timing": {"total_s": 3.2},
    }


def _plot_divs(html: str) -> list[str]:
    return re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', html)


def test_full_report_is_self_contained_with_every_section() -> None:
    results = make_results()
    before = json.dumps(results)
    html = render_report(results, generated_at=WHEN)
    assert json.dumps(results) == before  # input untouched

    assert html.count(get_plotlyjs()) == 1
    assert "<script src=" not in html and 'src="http' not in html
    assert _plot_divs(html) == ["fig-learning-curves", "fig-comparison", "fig-cross-site"]
    for text in (
        "heart-fedavg",
        "UCI Heart Disease",
        "Janosi et al. 1988",
        "CC BY 4.0",
        "fedavg",
        "Final metrics",
        "EXAM summary",
        "Round measurements",
        "num_contributions",
        "update_norm",
        "local-cleveland",
        "pooled",
        "0.1.0",
        "2025-01-02T03:04:05+00:00",
    ):
        assert text in html, text
    assert "dp_event" not in html.split("Round measurements")[1]  # non-numeric skipped
    assert "–" in html  # NaN AUROC at one site


def test_final_table_values_are_formatted() -> None:
    results = make_results()
    html = render_report(results, generated_at=WHEN)
    table = html.split('id="final-metrics"')[1].split("</table>")[0]
    weighted = results["final"]["weighted"]
    assert f"{weighted['accuracy']:.3f}" in table
    assert f"<td>{weighted['n']}</td>" in table
    for site in SITES:
        assert f"<td>{site}</td>" in table


def test_minimal_results_render_without_optional_sections() -> None:
    minimal = {
        "study": {"name": "tiny"},
        "task": "survival",
        "metrics": ["cindex"],
        "sites": ["a"],
        "final": {"per_site": {"a": {"cindex": 0.6, "n": 10}}, "weighted": {"cindex": 0.6}},
    }
    html = render_report(minimal)
    assert "tiny" in html and "0.600" in html
    assert _plot_divs(html) == []
    assert "EXAM summary" not in html and "Round measurements" not in html
    assert html.count(get_plotlyjs()) == 1


def test_empty_results_still_render() -> None:
    html = render_report({})
    assert "fedcare study" in html and _plot_divs(html) == []


def test_history_and_baselines_without_cross_site() -> None:
    results = make_results(rounds=3)
    for key in ("cross_site", "summary"):
        del results[key]
    html = render_report(results)
    assert _plot_divs(html) == ["fig-learning-curves", "fig-comparison"]


def test_partial_summary_does_not_crash() -> None:
    results = make_results()
    results["summary"] = {"metric": "accuracy", "own_site": {"absolute": math.nan}}
    html = render_report(results)
    assert "EXAM summary" in html


def test_site_names_and_text_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    results = make_results(sites=["cleveland", evil])
    results["study"]["name"] = "<b>study</b>"
    html = render_report(results)
    assert evil not in html and "<b>study</b>" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;study&lt;/b&gt;" in html
    assert html.count("<script>alert") == 0


def test_write_report_creates_the_file(tmp_path: Path) -> None:
    path = write_report(make_results(), tmp_path / "out" / "report.html", generated_at=WHEN)
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_results_round_trip_through_json_with_nan() -> None:
    results = json.loads(json.dumps(make_results()))
    assert "fig-cross-site" in render_report(results)


@pytest.mark.parametrize("rounds", [1, 12])
def test_rounds_table_has_one_row_per_round(rounds: int) -> None:
    html = render_report(make_results(rounds=rounds))
    table = html.split('id="rounds"')[1].split("</table>")[0]
    assert table.count("<tr><td>") == rounds


def test_malformed_optional_parts_are_left_out() -> None:
    results = make_results(rounds=2)
    results["history"][0]["evaluate"] = {"per_site": None, "weighted": None}
    results["cross_site"] = {"metric": "accuracy", "models": ["federated"], "matrix": [[]]}
    html = render_report(results)
    assert "fig-learning-curves" in html
