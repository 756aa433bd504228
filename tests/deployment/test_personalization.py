"""Personalization in deployment: the same personal models as in simulation.

A real deployment (a coordinator and 4 heart-disease site agents over mutual TLS, every task in
a spawned worker process) runs a Ditto and a fine-tuning study; the same studies run in
simulation. Ditto's personal model lives only in each site's state directory between tasks (a
worker process ends with its task), so equal ``personal_loss`` in every round shows the state
persisted at the site; none of it travels (tests/site/test_personalization.py checks the wire).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fedcare.coordinator.results import study_results

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    Deployment,
    deployment,
    heart_study,
    provision,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_mirror()
    root = tmp_path_factory.mktemp("personal")
    with deployment(provision(root / "federation"), root) as running:
        yield running


@pytest.mark.parametrize(
    "personal",
    [{"method": "ditto", "lam": 0.1, "lr": 0.1}, {"method": "finetune", "epochs": 3}],
    ids=lambda p: p["method"],
)
def test_deployed_sites_train_the_personal_models_simulation_does(
    federation: Deployment, personal: dict[str, Any]
) -> None:
    study = heart_study(personalization=personal, rounds=3)
    store = federation.store
    study_id = submit(store, study)
    wait_for_status(store, study_id, "completed", describe=federation.describe)

    deployed = {r.round: r.record for r in store.list_rounds(study_id) if r.round > 0}
    simulated = simulate(study)
    for rec in simulated.history:
        sim = (rec.evaluate or {}).get("per_site", {})
        dep = (deployed[rec.round].get("evaluate") or {}).get("per_site", {})
        personal_rounds = rec.round == 3 or personal["method"] == "ditto"
        for site in HOSPITALS:
            assert ("personal_loss" in dep[site]) == personal_rounds, (rec.round, dep[site])
            if personal_rounds:
                assert dep[site]["personal_loss"] == pytest.approx(
                    sim[site]["personal_loss"], abs=1e-6
                ), (rec.round, site)
    block = study_results(store, study_id)["personalization"]
    assert block["method"] == personal["method"] and sorted(block["sites"]) == sorted(HOSPITALS)
    assert block["mean"]["personal"]["loss"] < block["mean"]["global"]["loss"]
