"""End-to-end simulations on real data (from the mirror)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import RoundFailedError
from fedcare.records import Reply, Task
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import grid_for, run_simulation, train_on_grid
from fedcare.site.app import SiteApp
from fedcare.strategy import STRATEGIES
from fedcare.transport.inmemory import InMemoryGrid

from ..conftest import require_mirror

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def heart() -> StudyConfig:
    require_mirror()
    return StudyConfig.from_yaml(EXAMPLES / "heart-disease.yaml")


@pytest.fixture(scope="module")
def heart_results(heart: StudyConfig) -> dict:
    return run_simulation(heart)


def test_heart_disease_study_clears_an_accuracy_floor(heart_results: dict) -> None:
    final = heart_results["final"]
    assert set(final["per_site"]) == {"cleveland", "hungary", "switzerland", "va"}
    assert final["unweighted"]["accuracy"] >= 0.78
    assert final["weighted"]["auroc"] >= 0.85
    assert len(heart_results["history"]) == heart_results["study"]["rounds"]
    assert set(heart_results["baselines"]["local"]) == set(final["per_site"])
    pooled = heart_results["baselines"]["pooled"]["unweighted"]["accuracy"]
    assert final["unweighted"]["accuracy"] >= pooled - 0.03


def test_cross_site_matrix_and_exam_summary(heart_results: dict) -> None:
    cross = heart_results["cross_site"]
    assert cross["models"][0] == "federated" and cross["models"][-1] == "pooled"
    assert np.shape(cross["matrix"]) == (6, 4)
    summary = heart_results["summary"]
    assert summary["own_site"]["n_sites"] == 4
    # the federated model generalizes better than the average local model
    assert summary["generalizability"]["absolute"] > 0


def test_same_seed_same_model_and_other_seed_differs(heart: StudyConfig) -> None:
    study = heart.with_overrides(rounds=3, baselines={"local": False, "pooled": False})
    ds_shape = (13,)
    from fedcare.data.registry import load_dataset

    ds = load_dataset("heart-disease", protocol="raw")
    a = train_on_grid(grid_for(list(ds.sites)), study, ds_shape, label="a")
    b = train_on_grid(grid_for(list(ds.sites)), study, ds_shape, label="a")
    c = train_on_grid(grid_for(list(ds.sites)), study.with_overrides(seed=1), ds_shape, label="a")
    assert a.params == b.params
    assert not np.allclose(a.params["weight"], c.params["weight"])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_learns_on_heart_disease(heart: StudyConfig, name: str) -> None:
    options = {"fedprox": {"mu": 0.01}}.get(name, {})
    study = heart.with_overrides(
        rounds=5,
        strategy={"name": name, "options": options},
        baselines={"local": False, "pooled": False},
    )
    results = run_simulation(study)
    assert results["final"]["unweighted"]["accuracy"] >= 0.7, name


def test_no_patient_row_leaves_a_site(heart: StudyConfig) -> None:
    """On the wire, replies carry only model-shaped updates, per-feature sums and scalars."""
    from fedcare.data.registry import load_dataset

    ds = load_dataset("heart-disease", protocol="raw")
    recorded = grid_for(list(ds.sites), record=True)
    study = heart.with_overrides(rounds=2, strategy={"name": "scaffold", "options": {}})
    train_on_grid(recorded, study, (13,), label="wire")
    replies = [m for m in recorded.wire if isinstance(m, Reply)]
    assert {r.kind for r in replies} == {"stats", "fit", "evaluate"}
    n_params = 13 + 1
    for r in replies:
        assert r.ok, r.error
        for name, arr in r.arrays.items():
            assert arr.ndim <= 1 and arr.size <= 13, (r.kind, name, arr.shape)
        assert r.arrays.num_params <= 2 * n_params + 3 * 13
        assert all(isinstance(v, float) for v in r.metrics.values())
    tasks = [m for m in recorded.wire if isinstance(m, Task)]
    assert all(t.plan["model"] == {"kind": "logistic"} for t in tasks)


def test_too_few_sites_fails_with_a_clear_error(heart: StudyConfig) -> None:
    study = heart.with_overrides(rounds=1, min_sites=3, baselines={"local": False})
    from fedcare.data.registry import load_dataset

    ds = load_dataset("heart-disease", protocol="raw")
    sites = list(ds.sites)

    def broken(task: Task) -> Reply:
        return Reply.failure(task, "offline", "site is down")

    handlers = {s.site_id: SiteApp(s) for s in sites if s.site_id not in ("hungary", "va")}
    grid = InMemoryGrid({**handlers, "hungary": broken, "va": broken})
    study_local = study.with_overrides(preprocessing={"impute": "mean", "scale": "local"})
    with pytest.raises(RoundFailedError, match="2 usable replies, min_sites is 3"):
        train_on_grid(grid, study_local, (13,), label="x")
