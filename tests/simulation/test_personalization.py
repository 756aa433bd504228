"""Simulation's personalization block: global vs personal vs local model at each site."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.evaluation.personal import personalization_summary, split_personal
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import run_simulation


def rows(n: int, seed: int, shift: float) -> Dataset:
    """Sites whose label depends on a second feature with a site-specific sign (data differ)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (0.5 * X[:, 0] + shift * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
    return Dataset(X=X, y=y)


@pytest.fixture(scope="module")
def toy() -> FederatedDataset:
    sites = [
        SiteData(f"s{i}", train=rows(120, i, shift), test=rows(60, 10 + i, shift))
        for i, shift in enumerate((-2.0, 0.0, 2.0))
    ]
    return FederatedDataset("toy", "binary", tuple(sites))


def study(**changes: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "name": "p",
        "dataset": {"name": "synthetic"},
        "model": {"kind": "logistic"},
        "training": {"lr": 0.1, "epochs": 2, "batch_size": 20},
        "rounds": 4,
        "baselines": {"local": True, "pooled": False},
        "validation": {"report": False},
    }
    return StudyConfig.from_dict({**base, **changes})


@pytest.mark.parametrize(
    "personal",
    [{"method": "ditto", "lam": 0.05, "lr": 0.3}, {"method": "finetune", "epochs": 5, "lr": 0.3}],
)
def test_personal_models_beat_the_global_one_where_sites_differ(
    toy: FederatedDataset, personal: dict[str, Any]
) -> None:
    results = run_simulation(study(personalization=personal), dataset=toy)
    plain = run_simulation(study(), dataset=toy)
    block = results["personalization"]
    assert block["method"] == personal["method"] and block["failed_sites"] == {}
    assert set(block["sites"]) == {"s0", "s1", "s2"}
    for site, entry in block["sites"].items():
        # the global and local models are the plain study's (personalization changes neither)
        assert entry["global"] == pytest.approx(plain["final"]["per_site"][site])
        assert entry["local"] == pytest.approx(plain["baselines"]["local"][site]["per_site"][site])
        assert entry["personal"]["n"] == 60
    mean = block["mean"]
    accuracies = [e["personal"]["accuracy"] for e in block["sites"].values()]
    assert mean["personal"]["accuracy"] == pytest.approx(np.mean(accuracies))
    # opposite signs at s0 and s2: one global model cannot fit both, each site's own can
    assert mean["personal"]["accuracy"] > mean["global"]["accuracy"] + 0.1
    # the other evaluations carry no personal metric (baselines, cross-site matrix)
    assert not any(
        k.startswith("personal_") for m in results["final"]["per_site"].values() for k in m
    )
    assert results["final"]["per_site"] == plain["final"]["per_site"]


def test_no_block_without_personalization(toy: FederatedDataset) -> None:
    assert "personalization" not in run_simulation(study(rounds=1), dataset=toy)


def test_summary_splits_prefixed_metrics_and_averages_over_sites() -> None:
    glob, own = split_personal({"accuracy": 0.5, "personal_accuracy": 0.75, "n": 8})
    assert glob == {"accuracy": 0.5, "n": 8} and own == {"accuracy": 0.75, "n": 8}
    summary = personalization_summary(
        "ditto",
        {
            "a": {"accuracy": 0.5, "personal_accuracy": 0.75, "n": 8},
            "b": {"accuracy": 0.7, "personal_accuracy": 0.85, "n": 100},
            "c": {"accuracy": 0.9, "n": 10},  # never trained: no personal model
        },
        local={"a": {"accuracy": 0.6, "n": 8}},
    )
    assert summary["sites"]["c"]["personal"] is None
    assert summary["mean"]["personal"]["accuracy"] == pytest.approx(0.8)  # unweighted
    assert summary["mean"]["global"]["accuracy"] == pytest.approx(0.7)
    assert summary["mean"]["local"]["accuracy"] == pytest.approx(0.6)
