"""A study waits honestly over a real federation (fedcare.coordinator.waiting).

Real coordinator, real governed :class:`SiteAgent` threads over mutual TLS (as in
``test_governance``). A study submitted before a site's steward approved its plan stays
``running``, says in ``fedcare study status`` whom it awaits (round 0, the statistics round,
included), uses up none of its retries, and completes once ``fedcare site approve`` runs. A site
whose steward revoked is withheld from the study's tasks with a growing delay (named in the
round record and the status) and gets the study back after its steward approves again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli.governance import steward_store
from fedcare.cli.main import app
from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.waiting import Backoff
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from .helpers import (
    AgentThreads,
    Kits,
    contributors,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_round,
    wait_for_status,
)
from .test_governance import SOON, audit_entries, start_agent, study

pytestmark = pytest.mark.slow
WITHDRAWAL = Backoff(1.0, 4.0)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Kits, Coordinator, AgentThreads]]:
    require_mirror()
    kits = provision(tmp_path / "federation", ["good", "late"], name="waiting")
    with running_coordinator(
        kits, tmp_path / "home", round_retries=1, withdrawal_backoff=WITHDRAWAL
    ) as coordinator:
        agents = AgentThreads()
        try:
            yield kits, coordinator, agents
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()


def status(home: Path, study_id: str) -> str:
    result = CliRunner().invoke(app, ["study", "status", study_id, "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result.output


def wait_for_text(home: Path, study_id: str, text: str, timeout: float = 60.0) -> str:
    end = time.monotonic() + timeout
    while text not in (out := status(home, study_id)):
        assert time.monotonic() < end, f"{text!r} never in the status:\n{out}"
        time.sleep(0.2)
    return out


def test_a_study_awaits_approval_then_completes_once_the_steward_approves(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    # global scaling: round 0 is a statistics task, which the unapproved site refuses too
    the_study = heart_study(name="wait-for-me", rounds=2, min_sites=2, approval_wait=3600)
    h = plan_for_study(the_study).hash
    steward_store(tmp_path / "state" / "good", kits.sites["good"]).approve(the_study.name, h, SOON)
    states = {
        site: start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
        for site, hospital in (("good", "cleveland"), ("late", "hungary"))
    }
    study_id = submit(coordinator.store, the_study)
    home = tmp_path / "home"

    out = wait_for_text(home, study_id, "waiting: awaiting approval at late (plan ")
    assert "status: running" in out and "rounds done: -/2" in out and h in out, out
    time.sleep(2.0)  # several asks (0.1 s, 0.2 s, 0.4 s ...): far more than round_retries=1
    info = coordinator.store.get_study(study_id)
    assert info.status == "running" and "awaiting approval at late" in (info.reason or "")
    refused = [
        e for e in audit_entries(states["late"])
        if e["event"] == "decision" and e["data"].get("reason_kind") == "plan-not-approved"
    ]  # fmt: skip
    assert len(refused) >= 3, refused

    result = CliRunner().invoke(app, [
        "site", "approve", "--study", the_study.name, "--plan", h,
        "--state", str(states["late"]), "--kit", str(kits.sites["late"]),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
    assert "awaiting" not in status(home, study_id)
    assert contributors(coordinator.store.get_round(study_id, 2).record) == ["good", "late"]
    events = [e for e, _ in coordinator.audit.entries(study_id)]
    assert events.count("study-waiting") == 1 and "round-failed" not in events, events


def test_an_approval_wait_ends_at_its_deadline_naming_the_sites(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    the_study = study("wait-in-vain", rounds=1, min_sites=2, approval_wait=1.5)
    steward_store(tmp_path / "state" / "good", kits.sites["good"]).approve(
        the_study.name, plan_for_study(the_study).hash, SOON
    )
    for site, hospital in (("good", "cleveland"), ("late", "hungary")):
        start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
    study_id = submit(coordinator.store, the_study)
    failed = wait_for_status(coordinator.store, study_id, "failed", describe=agents.describe)
    assert (failed.reason or "").startswith("plan not approved at late within 1.5 s (deadline ")


def test_a_withdrawn_site_is_withheld_and_gets_the_study_back_when_approved_again(
    federation: tuple[Kits, Coordinator, AgentThreads], tmp_path: Path
) -> None:
    kits, coordinator, agents = federation
    the_study = study("withdrawn", rounds=40, min_sites=1)
    h = plan_for_study(the_study).hash
    stewards = {s: steward_store(tmp_path / "state" / s, kits.sites[s]) for s in ("good", "late")}
    for steward in stewards.values():
        steward.approve(the_study.name, h, SOON)
    stewards["late"].revoke(the_study.name)
    states = {
        site: start_agent(agents, kits, site, hospital, tmp_path, coordinator.port)
        for site, hospital in (("good", "cleveland"), ("late", "hungary"))
    }
    started = time.monotonic()
    study_id = submit(coordinator.store, the_study)
    home = tmp_path / "home"

    wait_for_round(coordinator.store, study_id, 1, describe=agents.describe)
    withdrawn = coordinator.store.get_round(study_id, 1).record["withdrawn_sites"]
    assert withdrawn["late"].startswith("approval-revoked; not asked again before "), withdrawn
    out = wait_for_text(home, study_id, "late withdrew: approval-revoked; not asked again before")
    assert "status: running" in out, out
    wait_for_round(coordinator.store, study_id, 10, describe=agents.describe)
    elapsed = time.monotonic() - started
    refused = [
        e for e in audit_entries(states["late"])
        if e["event"] == "decision" and e["data"].get("reason_kind") == "approval-revoked"
    ]  # fmt: skip
    # offered again at most once per backoff window (1 s, 2 s, 4 s ...), a fit and an evaluate
    # task each time; every round would have sent it both (20 refusals by round 10)
    assert len(refused) <= 2 * (2 + math.ceil(elapsed / WITHDRAWAL.first_s / 2)), (
        len(refused),
        elapsed,
    )
    assert len(refused) < 20, len(refused)

    hellos = coordinator.hub.hellos("late")
    stewards["late"].approve(the_study.name, h, SOON)  # the steward changes their mind
    # the agent sees the new approval and says Hello again, which ends the withholding at once
    # (not only when the backoff window ends)
    deadline = time.monotonic() + 10
    while coordinator.hub.hellos("late") == hellos and time.monotonic() < deadline:
        time.sleep(0.05)
    assert coordinator.hub.hellos("late") == hellos + 1, "the agent did not say Hello again"
    wait_for_status(coordinator.store, study_id, "completed", describe=agents.describe)
    rounds = [r.record for r in coordinator.store.list_rounds(study_id) if r.round >= 1]
    assert contributors(rounds[-1]) == ["good", "late"], rounds[-1]


def test_a_failed_round_is_retried_after_a_delay_that_the_status_states(tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", ["good", "late"], name="retries")
    the_study = study("retried", rounds=1, min_sites=2)
    h = plan_for_study(the_study).hash
    home = tmp_path / "home"
    agents = AgentThreads()
    retry = Backoff(1.5, 3.0)
    with running_coordinator(kits, home, round_retries=1, retry_backoff=retry) as coordinator:
        try:
            for site, hospital in (("good", "cleveland"), ("late", "hungary")):
                steward_store(tmp_path / "state" / site, kits.sites[site]).approve(
                    the_study.name, h, SOON
                )
                policy = {"min_privacy_mode": "secure"} if site == "late" else None
                start_agent(agents, kits, site, hospital, tmp_path, coordinator.port, policy)
            study_id = submit(coordinator.store, the_study)
            out = wait_for_text(home, study_id, "; retry 1 of 1 in 1.5 s")
            assert "status: running" in out and "\n  round 1 failed: 1 usable replies" in out
            failed = wait_for_status(
                coordinator.store, study_id, "failed", describe=agents.describe
            )
            entries = [d for e, d in coordinator.audit.entries(study_id) if e == "round-failed"]
        finally:
            agents.stop.set()
            coordinator.stop()
            agents.close()
    assert (failed.reason or "").endswith("(gave up after 1 retries)"), failed.reason
    assert "policy-privacy-mode" in (failed.reason or "")
    assert [e.get("retry_in_s") for e in entries] == [1.5, None], entries
