"""Privacy mode ``private`` over real gRPC: site ledgers, the coordinator's mirror, a refusal.

A real coordinator and 4 governed heart-disease agents (mutual TLS, ledgers in their state
folders, built as ``fedcare site start`` builds them). ``va``'s policy caps epsilon on the
dataset between what 2 and 3 rounds spend: it refuses round 3 before training, with its
reason visible at the coordinator; SecAgg+ recovers its share and the round counts with the
other 3 sites (``min_sites`` 3). Every site's ledger equals the coordinator's mirror.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fedcare.cli.governance import steward_store
from fedcare.coordinator.results import study_results
from fedcare.privacy.accounting.analysis import DpEvent
from fedcare.privacy.budget import ledger_epsilon
from fedcare.site.ledger import SiteLedger
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from .helpers import (
    HOSPITALS,
    AgentThreads,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)
from .test_governance import start_agent

pytestmark = pytest.mark.slow
Z = 1.0
SOON = datetime.now(timezone.utc) + timedelta(days=1)


def test_private_study_over_grpc_keeps_the_ledgers_in_step(tmp_path: Path) -> None:
    require_mirror()
    one, two, three = (ledger_epsilon([DpEvent(Z)] * n) for n in (1, 2, 3))
    cap = (two + three) / 2
    study = heart_study(
        name="heart-private",
        rounds=3,
        min_sites=3,
        preprocessing={"impute": "mean", "scale": "local"},
        privacy={"mode": "private", "dp": {"noise_multiplier": Z, "clip_norm": 1.0}},
    )
    kits = provision(tmp_path / "federation", HOSPITALS, name="private")
    states: dict[str, Path] = {}
    with running_coordinator(kits, tmp_path / "home", round_retries=1) as coordinator:
        agents = AgentThreads()
        try:
            for site in HOSPITALS:  # each steward approved the plan; va caps its epsilon
                state = tmp_path / "state" / site
                steward_store(state, kits.sites[site]).approve(
                    study.name, plan_for_study(study).hash, SOON
                )
                policy = {"epsilon_cap": {"heart-disease": cap}} if site == "va" else {}
                states[site] = start_agent(
                    agents, kits, site, site, tmp_path, coordinator.port, policy
                )
            study_id = submit(coordinator.store, study)
            wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
            store = coordinator.store
            rounds = [r.record for r in store.list_rounds(study_id) if r.round >= 1]
            mirror = store.site_epsilon(study_id)
            results = study_results(store, study_id)
            site_ledgers = {
                s: SiteLedger.in_state_dir(states[s]).spent("heart-disease") for s in HOSPITALS
            }
            # a second study on the same data: its budget allows 1 round, so the coordinator's
            # guard fails it before round 2; va's ledger (2 rounds spent) refuses its round 1
            second = study.with_overrides(
                name="heart-private-2",
                privacy={**study.privacy.model_dump(), "epsilon": (one + two) / 2},
            )
            for site in HOSPITALS:
                approvals = steward_store(states[site], kits.sites[site])
                approvals.approve(second.name, plan_for_study(second).hash, SOON)
            second_id = submit(store, second)
            failed_info = wait_for_status(store, second_id, "failed", describe=agents.describe)
            second_rounds = [r.record for r in store.list_rounds(second_id) if r.round >= 1]
            mirror_after = store.site_epsilon(second_id)
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    failed = rounds[2]["fit"]["failed_sites"]
    assert (
        "privacy-budget-exceeded: dataset heart-disease: this round would bring epsilon to"
        in (failed["va"])
    ), failed
    assert f"(cap {cap:g}; spent {two:.3g} across 1 study)" in failed["va"]
    assert sorted(rounds[2]["fit"]["contributing_sites"]) == ["cleveland", "hungary", "switzerland"]
    assert [r["fit"]["num_contributions"] for r in rounds] == [4, 4, 3]
    assert mirror == pytest.approx(site_ledgers, rel=1e-9)
    assert mirror["va"] == pytest.approx(two, rel=1e-9)
    assert mirror["cleveland"] == pytest.approx(three, rel=1e-9)
    summary = results["privacy_ledger"]
    assert summary["site_epsilon"] == mirror
    assert summary["study_epsilon"] == pytest.approx(three, rel=1e-9)  # default delta 1e-5
    card = results["model_card"]["privacy"]["epsilon_spent"]  # the study's central epsilon
    assert card["cleveland"] == pytest.approx(mirror["cleveland"], rel=1e-9)
    assert card["va"] >= mirror["va"]  # the card's per-study figure bounds a site that left
    # the guard: round 2 of the second study was never started
    assert "round 2 would bring epsilon to" in (failed_info.reason or ""), failed_info.reason
    assert len(second_rounds) == 1
    assert "va" in second_rounds[0]["fit"]["failed_sites"]
    one_more = ledger_epsilon([DpEvent(Z)] * 4)  # composed across both studies at the site
    assert mirror_after["cleveland"] == pytest.approx(one_more, rel=1e-9)
    assert "va" not in mirror_after
    cleveland = SiteLedger.in_state_dir(states["cleveland"])
    assert cleveland.spent("heart-disease") == pytest.approx(one_more, rel=1e-9)
    assert [(b.studies, b.rounds) for b in cleveland.summary()] == [(2, 4)]
