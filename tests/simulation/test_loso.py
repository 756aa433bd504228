"""Leave-one-site-out validation in simulation (``validation: leave_one_site_out``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score

from fedcare.cli.loso_table import loso_table
from fedcare.cli.output import jsonable
from fedcare.data.base import FederatedDataset
from fedcare.data.synthetic import load_synthetic
from fedcare.errors import ConfigError
from fedcare.evaluation.model_card import model_hash
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import SimulationResult, grid_for, run_simulation, train_on_grid

OPTIONS = {"num_sites": 3, "n_features": 4, "rows_per_site": 80, "seed": 3}


def _study(**changes: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "name": "loso",
        "dataset": {"name": "synthetic", "options": OPTIONS},
        "model": {"kind": "logistic"},
        "strategy": {"name": "fedavg"},
        "training": {"epochs": 1, "lr": 0.1, "batch_size": 8},
        "rounds": 3,
        "seed": 5,
        "validation": "leave_one_site_out",
    }
    return StudyConfig.from_dict({**base, **changes})


def _without(ds: FederatedDataset, site: str) -> FederatedDataset:
    return dataclasses.replace(ds, sites=tuple(s for s in ds.sites if s.site_id != site))


@pytest.fixture(scope="module")
def ds() -> FederatedDataset:
    return load_synthetic(**OPTIONS)


@pytest.fixture(scope="module")
def result(ds: FederatedDataset) -> SimulationResult:
    return run_simulation(_study(), dataset=ds)


def test_the_shorthand_asks_for_it() -> None:
    assert _study().validation.leave_one_site_out
    assert not _study(validation={}).validation.leave_one_site_out


def test_one_entry_per_held_out_site_none_trained_on_it(
    ds: FederatedDataset, result: SimulationResult
) -> None:
    loso = result["leave_one_site_out"]
    assert list(loso["sites"]) == ds.site_ids
    for site in ds.site_ids:
        entries = loso["sites"][site]
        assert set(entries) == {"federated", "pooled", "local"}
        others = [s for s in ds.site_ids if s != site]
        assert entries["federated"]["trained_on"] == others
        assert entries["pooled"]["trained_on"] == others
        assert entries["local"]["trained_on"] == [site]
        held = next(s for s in ds.sites if s.site_id == site)
        for entry in entries.values():  # each evaluated on the held-out site's test rows
            assert entry["n"] == len(held.test) and "failed" not in entry
        # every round's fit came from the others
        model = result.models[f"loso-{site}"]
        assert all(sorted(r.fit["contributing_sites"]) == others for r in model.history)
    for kind in ("federated", "pooled", "local"):
        summary = result["leave_one_site_out"]["summary"][kind]
        auroc = summary["measures"]["auroc"]
        values = [loso["sites"][s][kind]["evaluation"]["auroc"] for s in ds.site_ids]
        assert auroc["k"] == 3 and auroc["mean"] == pytest.approx(float(np.mean(values)))
        assert (auroc["min"], auroc["max"]) == (min(values), max(values))
        meta = summary["meta"]["auroc"]
        assert meta["k"] == 3 and meta["lo"] <= meta["random"] <= meta["hi"]


def test_the_federated_model_of_a_held_out_site_is_the_study_without_it(
    ds: FederatedDataset, result: SimulationResult
) -> None:
    study = _study(validation={})
    shape = ds.sites[0].train.input_shape
    for site in ("site-0", "site-2"):
        rest = _without(ds, site)
        alone = run_simulation(study, dataset=rest).model
        assert model_hash(result.models[f"loso-{site}"].params) == model_hash(alone.params)
        pooled = train_on_grid(
            grid_for([rest.pooled()]), study, shape, label="pooled", baseline=True
        )
        assert model_hash(result.models[f"loso-{site}-pooled"].params) == model_hash(pooled.params)
        # its AUROC is the model's on the held-out test rows (no preprocessing in this study)
        held = next(s for s in ds.sites if s.site_id == site)
        expected = roc_auc_score(held.test.y, alone.predict(held.test.X))
        entry = result["leave_one_site_out"]["sites"][site]["federated"]
        assert entry["evaluation"]["auroc"] == pytest.approx(expected, abs=1e-12)
        assert model_hash(result.models[f"loso-{site}"].params) != model_hash(result.model.params)


def test_local_baselines_are_reused_and_statistics_come_from_the_others(
    ds: FederatedDataset,
) -> None:
    study = _study(baselines={"local": True}, rounds=2, preprocessing={"scale": "global"})
    result = run_simulation(study, dataset=ds)
    for site in ds.site_ids:  # round 0's scaling statistics too
        others = [s for s in ds.site_ids if s != site]
        assert result.models[f"loso-{site}"].start["statistics_sites"] == others
    assert sorted(result.models) == sorted(
        ["federated"]
        + [f"local-{s}" for s in ds.site_ids]
        + [f"loso-{s}{k}" for s in ds.site_ids for k in ("", "-pooled")]
    )
    for site in ds.site_ids:
        local = result["leave_one_site_out"]["sites"][site]["local"]["evaluation"]
        assert local == result["baselines"]["local"][site]["per_site"][site]


def test_results_are_strict_json_and_print_as_a_table(result: SimulationResult) -> None:
    text = json.dumps(jsonable(dict(result)), allow_nan=False)
    assert json.loads(text)["leave_one_site_out"]["sites"]["site-1"]["federated"]["trained_on"]
    table = loso_table(json.loads(text))
    assert table is not None
    console = Console(width=200, record=True)
    console.print(table)
    out = console.export_text()
    for site in ("site-0", "site-1", "site-2", "mean", "random effects"):
        assert site in out
    assert loso_table({"metrics": ["auroc"]}) is None


@pytest.mark.parametrize(
    "privacy",
    [
        {"mode": "private", "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}},
        {"mode": "open", "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}},
    ],
)
def test_a_study_that_spends_privacy_budget_is_refused(privacy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"leave_one_site_out is refused for privacy mode"):
        run_simulation(_study(privacy=privacy))
    run_simulation(_study(privacy=privacy, validation={}, rounds=1))  # without it: runs


def test_too_few_sites_for_min_sites_is_refused(ds: FederatedDataset) -> None:
    with pytest.raises(ConfigError, match=r"trains on 2 of the 3 sites, fewer than .*min_sites"):
        run_simulation(_study(min_sites=3), dataset=ds)
    with pytest.raises(ConfigError, match=r"needs at least 2 sites, the dataset has 1"):
        run_simulation(_study(), dataset=dataclasses.replace(ds, sites=ds.sites[:1]))
