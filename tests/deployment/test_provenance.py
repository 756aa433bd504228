"""Provenance end to end: a real study registers its model with an exact card; a second study
continues from it (lineage); a bad ``init_model`` fails clearly; the coordinator's audit
trail verifies and holds the study's events.

One real deployment (a coordinator and 4 heart-disease site agents over mutual TLS); and a
governed one where one site approved the plan and one did not: only the approving site, with
its approval id, is on the card, and the other's refusals are in the coordinator's audit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.audit import verify_log
from fedcare.cli.governance import steward_store
from fedcare.cli.output import write_outputs
from fedcare.coordinator.results import study_results
from fedcare.coordinator.store import CoordinatorStore
from fedcare.data.fingerprint import dataset_fingerprint
from fedcare.evaluation.model_card import card_hash, model_hash
from fedcare.transport.codec import decode_arrays

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    AgentThreads,
    Deployment,
    assert_params_close,
    contributors,
    deployment,
    final_params,
    heart_data,
    heart_study,
    provision,
    round_params,
    running_coordinator,
    simulate,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    require_mirror()
    root = tmp_path_factory.mktemp("provenance")
    kits = provision(root / "federation")
    with deployment(kits, root) as running:
        yield running, kits.coordinator


def _fingerprint(hospital: str) -> str:
    data = heart_data(hospital).datasets["heart-disease"].load()
    return dataset_fingerprint(data, name="heart-disease")


def test_models_are_registered_with_exact_cards_lineage_and_audit(
    federation: tuple[Deployment, Path], tmp_path: Path
) -> None:
    fed, kit = federation
    store = fed.store
    study = heart_study(rounds=2)
    first = submit(store, study)
    wait_for_status(store, first, "completed", describe=fed.describe)

    [model] = store.list_models(first)
    card = model.card
    rounds = [r.record for r in store.list_rounds(first) if r.round > 0]
    took_part = sorted({s for r in rounds for s in contributors(r)})
    assert took_part == sorted(HOSPITALS)
    assert sorted(card["sites"]) == took_part
    for hospital in HOSPITALS:
        entry = card["sites"][hospital]
        assert entry["dataset_fingerprints"] == [_fingerprint(hospital)], hospital
        train_rows = len(heart_data(hospital).datasets["heart-disease"].load().train)
        assert entry["num_rows"] == [train_rows] and entry["rounds"] == [1, 2]
    params = final_params(store, first)
    assert model.model_hash == card["model"]["hash"] == model_hash(params)
    assert card["model"]["parent"] is None and card["privacy"]["mode"] == "open"
    # Simulation trains the same model: replies are summed in site order in both, so the
    # parameters agree to the last bit and the model hashes are equal.
    assert model_hash(simulate(study).params) == model.model_hash

    second = submit(store, heart_study(rounds=1, name="continued", init_model=model.version))
    wait_for_status(store, second, "completed", describe=fed.describe)
    [child] = store.list_models(second)
    assert child.parent == model.version and child.card["model"]["parent"] == model.version
    assert [m.version for m in store.lineage(child.version)] == [child.version, model.version]
    assert_params_close(
        round_params(store, second, 0), decode_arrays(store.model_params(model.version)), atol=0
    )

    results = study_results(store, first)
    assert results["model_card"] == card
    html = write_outputs(results, tmp_path)[1].read_text()
    assert 'id="model-card"' in html and _fingerprint("cleveland") in html

    log = fed.coordinator.audit.path
    assert log is not None
    verified = verify_log(log, cert_path=kit / "cert.pem")
    assert verified.ok, verified.reason
    events = fed.coordinator.audit.entries(first)
    names = [e for e, _ in events]
    assert names[:2] == ["study-submitted", "study-started"]
    assert [d["round"] for e, d in events if e == "round-completed"] == [0, 1, 2]
    assert names[-2:] == ["model-registered", "study-finished"]
    registered = events[-2][1]
    assert registered["card_hash"] == card_hash(card) and registered["version"] == model.version
    last_round = [d for e, d in events if e == "round-completed"][-1]
    assert last_round["aggregated_sites"] == sorted(HOSPITALS)
    assert last_round["checkpoint"]["params"] == store.get_round(first, 2).params_digest


def test_an_unknown_init_model_fails_the_study_naming_it(
    federation: tuple[Deployment, Path],
) -> None:
    fed, _ = federation
    study_id = submit(fed.store, heart_study(rounds=1, name="bad-parent", init_model="m-missing"))
    info = wait_for_status(fed.store, study_id, "failed", describe=fed.describe)
    assert "m-missing" in (info.reason or "")
    assert fed.store.list_models(study_id) == []
    assert "study-failed" in [e for e, _ in fed.coordinator.audit.entries(study_id)]


def _wait_for_sites(store: CoordinatorStore, sites: set[str], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while {s.id for s in store.list_sites() if s.last_seen is not None} < sites:
        assert time.monotonic() < end, f"sites {sorted(sites)} did not all connect"
        time.sleep(0.2)


def test_a_governed_card_lists_only_approving_sites_with_their_approvals(tmp_path: Path) -> None:
    from fedcare.strategy.plan import plan_for_study

    from .test_governance import SOON, start_agent
    from .test_governance import study as governed_study

    require_mirror()
    kits = provision(tmp_path / "federation", ["good", "unapproved"], name="prov-gov")
    with running_coordinator(kits, tmp_path / "home", round_retries=1) as coordinator:
        agents = AgentThreads()
        try:
            the_study = governed_study("prov-governed", rounds=2, min_sites=1)
            plan = plan_for_study(the_study).hash
            approvals = steward_store(tmp_path / "state" / "good", kits.sites["good"])
            approval = approvals.approve(the_study.name, plan, SOON)
            for site, hospital in (("good", "cleveland"), ("unapproved", "hungary")):
                start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
            _wait_for_sites(coordinator.store, {"good", "unapproved"})
            study_id = submit(coordinator.store, the_study)
            wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
            [model] = coordinator.store.list_models(study_id)
            events = coordinator.audit.entries(study_id)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    card = model.card
    assert list(card["sites"]) == ["good"]
    assert card["sites"]["good"]["approval_ids"] == [approval.approval_id]
    assert card["sites"]["good"]["plan_hashes"] == [plan] and card["plan_hash"] == plan
    assert card["sites"]["good"]["dataset_fingerprints"] == [_fingerprint("cleveland")]
    assert card["not_participating"]["unapproved"].startswith("plan-not-approved")
    refused = [(d["site"], d["round"]) for e, d in events if e == "site-refused"]
    assert refused == [("unapproved", 1), ("unapproved", 2)]
