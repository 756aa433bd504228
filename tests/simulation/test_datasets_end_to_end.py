"""Short simulations on the other real datasets: survival, ICU mortality, chest X-rays."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NO_BASELINES = {"local": False, "pooled": False}


def study(name: str, **changes: object) -> StudyConfig:
    require_mirror()
    return StudyConfig.from_yaml(EXAMPLES / f"{name}.yaml").with_overrides(**changes)


def test_tcga_brca_cox_reaches_a_useful_c_index() -> None:
    results = run_simulation(study("tcga-brca", rounds=10, baselines=NO_BASELINES))
    assert results["task"] == "survival"
    assert len(results["final"]["per_site"]) == 6
    assert results["final"]["unweighted"]["cindex"] >= 0.7


def test_eicu_regions_predict_mortality() -> None:
    results = run_simulation(study("eicu", rounds=10, baselines=NO_BASELINES))
    assert set(results["final"]["per_site"]) == {
        "region-midwest",
        "region-northeast",
        "region-south",
        "region-west",
    }
    assert results["final"]["weighted"]["auroc"] >= 0.75


def test_pneumoniamnist_cnn_through_the_torch_adapter() -> None:
    pytest.importorskip("torch")
    training = {"epochs": 2, "lr": 0.003, "batch_size": 32, "optimizer": "adam"}
    results = run_simulation(
        study("pneumoniamnist", rounds=2, training=training, baselines=NO_BASELINES)
    )
    assert results["holdout"]["federated"]["auroc"] >= 0.85
    assert len(results["final"]["per_site"]) == 5
