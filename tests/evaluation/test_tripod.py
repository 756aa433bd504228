"""The model card's TRIPOD+AI block: what fedcare fills in from the run, what is left to write."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.evaluation.model_card import build_model_card
from fedcare.evaluation.report import render_report
from fedcare.evaluation.tripod import TO_WRITE, tripod_section, tripod_view
from fedcare.records.arrays import ArrayRecord

DATA = Path(__file__).parent / "data" / "clinical_results.json"
STUDY = {
    "name": "hd",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "preprocessing": {"impute": "mean", "scale": "global"},
    "strategy": {"name": "fedprox", "options": {"mu": 0.1}},
    "training": {"epochs": 1, "lr": 0.03},
    "rounds": 20,
    "fraction": 1.0,
    "privacy": {"mode": "open"},
    "validation": {"leave_one_site_out": True, "bootstrap": 200},
}


def _validation() -> dict[str, Any]:
    results = json.loads(DATA.read_text())
    validation: dict[str, Any] = results["validation"]["federated"]
    return validation


def _by_topic(block: dict[str, Any], key: str) -> dict[str, str]:
    return {r["topic"]: r["text"] for r in block[key]}


def test_tripod_fills_the_facts_of_the_run() -> None:
    block = tripod_section(
        study=STUDY,
        sites={"switzerland": {"num_rows": [30]}, "cleveland": {"num_rows": [199]}},
        validation=_validation(),
        dataset={"name": "heart-disease", "description": "UCI heart disease"},
        feature_names=["age", "sex"],
        task="binary",
        created="2026-12-05T00:00:00+00:00",
    )
    assert block["guideline"].startswith("TRIPOD+AI")
    filled = _by_topic(block, "filled")
    assert filled["Data sources"] == "dataset heart-disease: UCI heart disease"
    assert "4 sites: cleveland, hungary, switzerland, va" in filled["Sites"]
    sizes = filled["Sample size and outcome events"]
    assert "switzerland: 30 training rows, 16 test rows (15 with the outcome)" in sizes
    assert "cleveland: 199 training rows, 104 test rows (48 with the outcome)" in sizes
    assert filled["Predictors"] == "2 predictors: age, sex"
    assert "pooled mean from a federated statistics round" in filled["Missing data"]
    assert "strategy fedprox (mu=0.1), 20 rounds" in filled["Model and training"]
    assert "privacy mode open" in filled["Model and training"]
    assert "leave-one-site-out" in filled["Validation"]
    assert "AUROC 0.880 (0.831–0.917)" in filled["Performance (with intervals)"]
    assert "no-information rate 0.516" in filled["Performance (with intervals)"]
    assert "slope (random effects across sites)" in filled["Calibration"]
    assert "prediction interval" in filled["Heterogeneity across sites (AUROC)"]
    assert "equalized odds difference" in filled["Fairness (subgroups)"]
    to_write = _by_topic(block, "to_write")
    for topic in ("Ethical approval", "Target population and intended use", "Eligibility"):
        assert topic in to_write
    assert "Fairness" not in to_write  # subgroups were reported
    json.dumps(block, allow_nan=False)


def test_tripod_without_validation_lists_more_for_the_authors() -> None:
    block = tripod_section(study={"rounds": 3}, sites={})
    filled = _by_topic(block, "filled")
    assert "Performance (with intervals)" not in filled and "Sites" not in filled
    assert "no imputation" in filled["Missing data"]
    to_write = _by_topic(block, "to_write")
    assert len(to_write) == len(TO_WRITE) + 1 and "Fairness" in to_write


def test_the_card_carries_the_block_and_the_report_shows_two_lists() -> None:
    card = build_model_card(
        study=STUDY,
        study_id="hd",
        plan={"model": {"kind": "logistic"}},
        history=[],
        final=None,
        params=ArrayRecord({"weight": np.zeros(2), "bias": np.zeros(())}),
        created=datetime(2026, 12, 5, tzinfo=timezone.utc),
        fedcare_version="0",
        validation=_validation(),
        feature_names=["age", "<sex>"],
        task="binary",
    )
    assert "16 test rows" in _by_topic(card["tripod"], "filled")["Sample size and outcome events"]
    view = tripod_view(card["tripod"])
    assert view is not None and view["filled"] and view["to_write"]
    html = render_report({"model_card": card})
    assert "For the authors to write" in html and "Filled in by fedcare" in html
    assert "17 Ethical approval" in html
    assert "age, &lt;sex&gt;" in html
    assert tripod_view({}) is None
