"""Simulation provenance: results.json carries a model card; same seed, same model hash."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedcare.data.fingerprint import dataset_fingerprint
from fedcare.data.synthetic import load_synthetic
from fedcare.errors import ConfigError
from fedcare.evaluation.model_card import model_hash
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, run_simulation, train_on_grid

OPTIONS = {"num_sites": 3, "n_features": 5, "rows_per_site": 48, "seed": 4}


def _study(**changes: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "name": "provenance",
        "dataset": {"name": "synthetic", "options": OPTIONS},
        "model": {"kind": "logistic"},
        "preprocessing": {"scale": "global"},
        "strategy": {"name": "fedavg"},
        "training": {"epochs": 1, "lr": 0.1, "batch_size": 8},
        "rounds": 3,
        "seed": 7,
    }
    return StudyConfig.from_dict({**base, **changes})


def test_results_carry_a_card_of_the_in_memory_sites() -> None:
    study = _study()
    results = run_simulation(study)
    card = results["model_card"]
    ds = load_synthetic(**OPTIONS)
    assert sorted(card["sites"]) == ds.site_ids
    for site in ds.sites:
        entry = card["sites"][site.site_id]
        assert entry["dataset_fingerprints"] == [dataset_fingerprint(site, name="synthetic")]
        assert entry["num_rows"] == [len(site.train)] and entry["rounds"] == [1, 2, 3]
    assert card["model"]["version"] is None and card["model"]["parent"] is None
    assert card["metrics"]["per_site"].keys() == results["final"]["per_site"].keys()
    json.dumps(card, allow_nan=False)


def test_the_same_seed_gives_the_same_model_hash_and_another_seed_another() -> None:
    ds = load_synthetic(**OPTIONS)
    shape = ds.sites[0].train.input_shape

    def train(seed: int) -> str:
        study = _study(seed=seed)
        grid = grid_for(list(ds.sites))
        return model_hash(train_on_grid(grid, study, shape, label="federated").params)

    first = train(7)
    assert train(7) == first
    assert train(8) != first


def test_init_model_is_refused_in_simulation_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"init_model 'm-1234'.*no model registry"):
        run_simulation(_study(init_model="m-1234"))
