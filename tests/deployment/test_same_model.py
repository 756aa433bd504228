"""Simulation and deployment give the same model for the same seed.

One real deployment (a coordinator and 4 heart-disease site agents over mutual TLS, tasks run
in worker processes) runs each study; the same study runs in simulation over the in-memory
grid. Task seeds depend only on the study seed, round, site and kind (not on the study id,
which differs), so the final parameters and every round's per-site test loss must agree up to
floating-point summation order. Strategies with server state (FedAdam's moments) and site
state (SCAFFOLD's control variates, kept on disk by the agents) are covered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    Deployment,
    assert_params_close,
    assert_same_evaluations,
    assert_same_validation,
    deployment,
    final_params,
    heart_study,
    max_abs_diff,
    provision,
    round_params,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_mirror()
    root = tmp_path_factory.mktemp("same-model")
    with deployment(provision(root / "federation"), root) as running:
        yield running


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedavg"},
        {"name": "fedadam", "options": {"server_lr": 0.05}},
        {"name": "scaffold"},
    ],
    ids=lambda s: s["name"],
)
def test_deployment_and_simulation_train_the_same_model(
    federation: Deployment, strategy: dict[str, Any]
) -> None:
    study = heart_study(strategy=strategy, rounds=3)
    store = federation.store
    study_id = submit(store, study)

    wait_for_status(store, study_id, "completed", describe=federation.describe)

    rounds = store.list_rounds(study_id)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert rounds[0].record["statistics_sites"] == sorted(HOSPITALS)  # provenance of the scaling
    for r in rounds[1:]:
        assert r.record["fit"]["num_contributions"] == len(HOSPITALS), r.record["fit"]
        assert sorted(r.record["evaluate"]["per_site"]) == sorted(HOSPITALS)
    deployed = final_params(store, study_id)
    moved = max(max_abs_diff(deployed, round_params(store, study_id, 0)).values())
    assert moved > 1e-3, f"training barely moved the model ({moved:.2g}); the test proves little"
    simulated = simulate(study)
    assert_params_close(
        deployed, simulated.params, what=f"{strategy['name']}: deployed vs simulated"
    )
    assert_same_evaluations(store, study_id, simulated)
    assert_same_validation(store, study_id, simulated, study)
