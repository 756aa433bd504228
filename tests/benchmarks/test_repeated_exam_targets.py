"""Repeated splits, continued: the EXAM summary from stored per-site scores
(``benchmarks/repeated_exam.py``), the targets judged on repeated means
(``benchmarks/targets_repeated.py``) and the eICU hospital split's union scores."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from repeated_exam import exam_rows, exam_split_figures
from targets_repeated import repeated_targets, targets_table

NAN = math.nan


def _seed(**sites: tuple[float, float]) -> dict[str, Any]:
    """Per method: its AUROC on sites a and b."""
    return {m: {"sites": {"a": {"auroc": a}, "b": {"auroc": b}}} for m, (a, b) in sites.items()}


def _run(*seeds: dict[str, Any]) -> dict[str, Any]:
    methods = seeds[0]
    return {"seeds": list(range(len(seeds))), "scores": {m: [s[m] for s in seeds] for m in methods}}


# Split 1: two seeds. FedAvg (a, b) = (0.8, 0.7), then (0.9, 0.7); the local models are fixed.
# The quality-settings local model must be ignored (its 0.0 would change every figure).
SPLIT_1 = _run(
    _seed(fedavg=(0.8, 0.7), **{"local-a": (0.75, 0.5), "local-b": (0.6, 0.65),
                                "local-a-quality-settings": (0.0, 0.0)}),
    _seed(fedavg=(0.9, 0.7), **{"local-a": (0.75, 0.5), "local-b": (0.6, 0.65),
                                "local-a-quality-settings": (0.0, 0.0)}),
)  # fmt: skip
# Split 2: site b's local model is undefined on its own test rows (one class there).
SPLIT_2 = _run(_seed(fedavg=(0.7, 0.6), **{"local-a": (0.6, 0.4), "local-b": (0.5, NAN)}))


def test_exam_figures_by_hand_per_seed_then_per_split() -> None:
    f = exam_split_figures([SPLIT_1, SPLIT_2], "fedavg", "auroc")
    # Own site, split 1: seed 0 (0.05 + 0.05) / 2, seed 1 (0.15 + 0.05) / 2 -> 0.075.
    # Split 2: only site a is defined: 0.7 - 0.6 = 0.1.
    assert f["own-site-absolute"] == pytest.approx([0.075, 0.1], abs=1e-12)
    rel_1 = ((0.05 / 0.75 + 0.05 / 0.65) / 2 + (0.15 / 0.75 + 0.05 / 0.65) / 2) / 2
    assert f["own-site-relative"] == pytest.approx([rel_1, 0.1 / 0.6], abs=1e-12)
    assert f["own-site-local"] == pytest.approx([0.7, 0.6], abs=1e-12)
    # Generalizability: local on the other site (0.5 and 0.6; split 2: 0.4 and 0.5) against the
    # federated model's mean over all sites (0.75 and 0.8; split 2: 0.65).
    assert f["generalizability-local"] == pytest.approx([0.55, 0.45], abs=1e-12)
    assert f["generalizability-federated"] == pytest.approx([0.775, 0.65], abs=1e-12)
    assert f["generalizability-absolute"] == pytest.approx([0.225, 0.2], abs=1e-12)


def test_exam_rows_carry_the_interval_over_splits_and_say_where_sites_drop() -> None:
    rows = exam_rows("d", [SPLIT_1, SPLIT_2], ["auroc"], methods=["fedavg"])
    by = {r["metric"]: r for r in rows}
    own = by["auroc-exam-own-site-absolute"]
    assert (own["method"], own["n"], own["mean"]) == ("fedavg", 2, 0.0875)
    half = 12.706204736174698 * math.sqrt(2 * 0.0125**2) / math.sqrt(2)  # t(1) 97.5%
    assert own["lo"] == pytest.approx(0.0875 - half, abs=1e-4)
    assert "auroc is defined: 1 to 2 of 2 per split" in own["notes"]
    assert by["auroc-exam-own-site-relative"]["unit"] == "fraction"
    assert len(rows) == 8


def _row(dataset: str, method: str, metric: str, mean: float, lo: float, hi: float,
         notes: str = "") -> dict[str, Any]:  # fmt: skip
    return {"dataset": dataset, "method": method, "metric": metric, "mean": mean, "lo": lo,
            "hi": hi, "sd": 0.01, "n": 30, "notes": notes}  # fmt: skip


HEART = [
    _row("heart-disease", "best-on-validation", "accuracy", 0.805, 0.795, 0.815),
    _row("heart-disease", "fedavg", "accuracy", 0.809, 0.798, 0.819),
    _row("heart-disease", "pooled", "accuracy", 0.817, 0.806, 0.827),
    _row("heart-disease", "fedavg - pooled", "accuracy", -0.012, -0.016, -0.004,
         "paired; |difference| <= 0.01 in 12 of 30 splits, >= -0.01 in 14"),
]  # fmt: skip


def test_targets_are_judged_on_the_repeated_mean_with_the_interval_beside_it() -> None:
    found = {t.key: t for t in repeated_targets(HEART)}
    best = found["best federated strategy >= 0.80"]
    assert best.met and best.method == "best-on-validation"
    assert best.figure == "0.805 [0.795, 0.815]" and best.detail == "interval straddles it"
    below = found["FedAvg no more than 0.01 below pooled"]
    assert not below.met  # -0.012 < -0.01 on the mean, though the interval reaches -0.004
    assert "interval straddles it" in below.detail and "12 of 30 splits" in below.detail
    assert not found["|FedAvg - pooled| <= 0.01 (two-sided reading)"].met
    assert repeated_targets([r for r in HEART if r["dataset"] == "x"]) == []


def test_targets_table_keeps_the_single_split_verdict_and_marks_single_only_ones() -> None:
    single = [
        {"dataset": "heart-disease", "method": "fedavg", "notes": "settings; target FedAvg no "
         "more than 0.01 below pooled: MET [FedAvg 0.8176 ± 0.0015, difference +0.0150]"},
        {"dataset": "pneumoniamnist", "method": "fedavg", "notes": "target FedAvg holdout AUROC "
         "within 0.02 of pooled: MET [difference -0.009]"},
    ]  # fmt: skip
    text = "\n".join(targets_table(single, HEART))
    assert (
        "| heart-disease | FedAvg no more than 0.01 below pooled | fedavg - pooled | "
        "-0.012 [-0.016, -0.004] | MISSED (FedAvg 0.809 [0.798, 0.819]" in text
    )
    assert "| MET (fedavg) | FedAvg 0.8176 ± 0.0015, difference +0.0150 |" in text
    assert (
        "| pneumoniamnist | FedAvg holdout AUROC within 0.02 of pooled | single split only |"
        in text
    )


def test_union_scores_and_the_outcome_counts_note() -> None:
    from repeated import SPECS
    from repeated_protocol import _outcomes, _scores

    per_site = {"h1": {"auroc": 0.5, "n": 5.0}, "h2": {"auroc": NAN, "n": 4.0}}
    scores = _scores(["auroc"], per_site, {"union": {"auroc": 0.75, "loss": 0.3}})
    assert scores["auroc"] == 0.5 and scores["auroc-union"] == 0.75
    assert math.isnan(scores["sites"]["h2"]["auroc"]) and "n" not in scores["sites"]["h1"]
    spec = SPECS["eicu-hospital"]
    assert spec.reported == ("auroc", "auroc-union") and spec.split_seeds(2) == [1, 2]
    runs = [{"test": {"h1": [5, 1], "h2": [4, 0], "h3": [6, 2]}},
            {"test": {"h1": [5, 0], "h2": [4, 4], "h3": [6, 1]}}]  # fmt: skip
    note = _outcomes(spec, runs, "auroc")
    assert "both outcomes, per split: 1 to 2 (median 1.5) of 3" in note
    assert "positives among all sites' test rows: 3 to 5 (median 4)" in note
    assert _outcomes(spec, runs, "auroc-union") == ""
    assert _outcomes(SPECS["eicu"], runs, "auroc") == ""
