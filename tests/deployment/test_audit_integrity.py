"""Approvals and audit integrity on a real federation (issue 10, findings 7 and 8c).

Real coordinator, real governed :class:`SiteAgent` threads over mutual TLS, built as
``fedcare site start`` builds them: a forged approval row is refused with a reason the
coordinator shows; a corrupt approvals file refuses tasks while the agent keeps running; a
policy edit applies without a restart and is audited; a site log rolled back to an older copy
is detected by the coordinator and by ``fedcare audit verify``; a site restarts after
``fedcare provision rotate`` with its audit chain intact.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.governance import build_governance, site_refusals, steward_store
from fedcare.cli.main import app
from fedcare.coordinator.server import Coordinator
from fedcare.records.study import StudyConfig
from fedcare.site.agent import SiteAgent
from fedcare.strategy.plan import plan_for_study

from ..conftest import require_mirror
from .helpers import (
    Kits,
    heart_data,
    heart_study,
    provision,
    running_coordinator,
    submit,
    wait_for_status,
)

pytestmark = pytest.mark.slow
SOON = datetime.now(timezone.utc) + timedelta(days=1)
SITES = {"good": "cleveland", "target": "hungary"}


def study(name: str, **overrides: Any) -> StudyConfig:
    return heart_study(
        name=name, preprocessing={"impute": "mean", "scale": "local"}, rounds=1, min_sites=1,
        **overrides,
    )  # fmt: skip


class Site:
    """One governed agent thread (stoppable and restartable on its own)."""

    def __init__(self, kits: Kits, site: str, root: Path, port: int) -> None:
        self.kits, self.site, self.port = kits, site, port
        self.kit, self.state = kits.sites[site], root / "state" / site
        self.policy = root / f"{site}-policy.yaml"
        self.policy.write_text(yaml.safe_dump({"min_cohort": 10}))
        self.events: list[str] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> SiteAgent:
        gov = build_governance(self.state, self.kit, self.policy)
        gov.anchors.every_s = 0.5  # anchor after every task
        agent = SiteAgent(
            self.kit, heart_data(SITES[self.site]), state_dir=self.state,
            coordinator=f"127.0.0.1:{self.port}", poll_wait=0.5, time_limit=60.0,
            on_event=self.events.append, governance=gov,
        )  # fmt: skip
        self.stop = threading.Event()

        def main() -> None:
            try:
                agent.run(self.stop)
            except BaseException as err:
                self.error = err

        self.thread = threading.Thread(target=main, name=f"agent-{self.site}", daemon=True)
        self.thread.start()
        return agent

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.error is None

    def approve(self, the_study: StudyConfig) -> str:
        h = plan_for_study(the_study).hash
        steward_store(self.state, self.kit).approve(the_study.name, h, SOON)
        return h

    def entries(self) -> list[dict[str, Any]]:
        lines = (self.state / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def describe(self) -> str:
        return f"{self.site}: error={self.error!r}\n  " + "\n  ".join(self.events[-15:])


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Kits, Coordinator, dict[str, Site]]]:
    require_mirror()
    kits = provision(tmp_path / "federation", list(SITES), name="integrity")
    with running_coordinator(kits, tmp_path / "home", round_retries=1) as coordinator:
        sites = {s: Site(kits, s, tmp_path, coordinator.port) for s in SITES}
        try:
            yield kits, coordinator, sites
        finally:
            for site in sites.values():
                site.stop.set()
            coordinator.stop()
            for site in sites.values():
                site.close()


def run_study(coordinator: Coordinator, sites: dict[str, Site], the_study: StudyConfig) -> Any:
    """Submit, wait for completion; return round 1's fit record."""
    study_id = submit(coordinator.store, the_study)
    describe = lambda: "\n".join(s.describe() for s in sites.values())  # noqa: E731
    wait_for_status(coordinator.store, study_id, "completed", describe=describe)
    return study_id, coordinator.store.get_round(study_id, 1).record["fit"]


def test_a_forged_approval_row_is_refused_and_the_coordinator_shows_why(
    federation: tuple[Kits, Coordinator, dict[str, Site]],
) -> None:
    _, coordinator, sites = federation
    the_study = study("integrity-forged")
    sites["good"].approve(the_study)
    h = plan_for_study(the_study).hash
    target = sites["target"]
    steward_store(target.state, target.kit)  # creates the file, as a first start does
    db = sqlite3.connect(target.state / "approvals.sqlite")
    with db:  # what someone with write access to the state folder could do
        db.execute(
            "INSERT INTO approvals (study, plan_hash, status, until, decided_at)"
            " VALUES (?, ?, 'approved', ?, ?)",
            (the_study.name, h, SOON.isoformat(), datetime.now(timezone.utc).isoformat()),
        )
    db.close()
    for site in sites.values():
        site.start()
    study_id, fit = run_study(coordinator, sites, the_study)
    reason = fit["failed_sites"]["target"]
    assert reason.startswith("approval-invalid: approval-1 of plan"), reason
    assert "no steward signature" in reason and "fedcare site approve" in reason
    assert fit["num_contributions"] == 1
    lines = site_refusals(coordinator.store, study_id)
    assert any(line.startswith("site target refused round 1") for line in lines), lines
    events = [e["event"] for e in target.entries()]
    assert "task-executed" not in events and "decision" in events


def test_a_corrupt_approvals_file_refuses_tasks_and_the_agent_keeps_running(
    federation: tuple[Kits, Coordinator, dict[str, Site]],
) -> None:
    _, coordinator, sites = federation
    first, second = study("integrity-corrupt-1"), study("integrity-corrupt-2")
    for site in sites.values():
        site.approve(first)
        site.approve(second)
        site.start()
    target = sites["target"]
    path = target.state / "approvals.sqlite"
    good = path.read_bytes()
    path.write_bytes(b"\x00garbage, not an SQLite database\x00" * 100)
    _, fit = run_study(coordinator, sites, first)
    reason = fit["failed_sites"]["target"]
    assert reason.startswith("approvals-unreadable: the site's approvals file"), reason
    assert str(path) in reason
    assert target.alive, target.describe()
    path.write_bytes(good)  # the steward restores it: the site serves again, no restart
    _, fit = run_study(coordinator, sites, second)
    assert fit["failed_sites"] == {} and fit["num_contributions"] == 2, fit
    assert target.alive, target.describe()


def test_a_policy_edit_applies_without_a_restart_and_is_audited(
    federation: tuple[Kits, Coordinator, dict[str, Site]],
) -> None:
    _, coordinator, sites = federation
    first, second, third = (study(f"integrity-policy-{i}") for i in range(3))
    for site in sites.values():
        for s in (first, second, third):
            site.approve(s)
        site.start()
    target = sites["target"]
    _, fit = run_study(coordinator, sites, first)
    assert fit["num_contributions"] == 2, fit
    target.policy.write_text(yaml.safe_dump({"min_cohort": 10, "allowed_studies": [first.name]}))
    _, fit = run_study(coordinator, sites, second)
    assert fit["failed_sites"]["target"].startswith("policy-study-not-allowed"), fit
    changed = [e["data"] for e in target.entries() if e["event"] == "policy-changed"]
    assert len(changed) == 1 and changed[0]["changed"] == {
        "allowed_studies": {"old": None, "new": [first.name]}
    }
    assert changed[0]["old_sha256"] != changed[0]["new_sha256"]
    target.policy.write_text("min_cohort: -1\n")  # invalid: every task refused, named
    _, fit = run_study(coordinator, sites, third)
    reason = fit["failed_sites"]["target"]
    assert reason.startswith("policy-invalid:") and str(target.policy) in reason, reason
    assert "min_cohort" in reason and target.alive
    assert any(e["event"] == "policy-invalid" for e in target.entries())


def _wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {timeout:g} s")
        time.sleep(0.1)


def _anchored(site: Site) -> list[dict[str, Any]]:
    path = site.state / "audit-anchors.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_rolled_back_site_audit_log_is_detected(
    federation: tuple[Kits, Coordinator, dict[str, Site]], tmp_path: Path
) -> None:
    _, coordinator, sites = federation
    the_study = study("integrity-rollback")
    target = sites["target"]
    target.approve(the_study)
    target.start()
    _wait_for("first anchor", lambda: len(_anchored(target)) >= 1)
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("audit.jsonl", "audit.jsonl.head"):  # an older copy of log and head
        shutil.copy2(target.state / name, saved / name)
    run_study(coordinator, {"target": target}, the_study)
    _wait_for("a later anchor", lambda: _anchored(target)[-1]["seq"] > _anchored(target)[0]["seq"])
    target.close()
    last = coordinator.store.last_anchor("target")
    assert last is not None and last.seq == _anchored(target)[-1]["seq"]
    for name in ("audit.jsonl", "audit.jsonl.head"):
        shutil.copy2(saved / name, target.state / name)
    restored = CliRunner().invoke(
        app, ["audit", "verify", str(target.state / "audit.jsonl"), "--kit", str(target.kit)]
    )
    assert restored.exit_code == 1, restored.output
    assert "rolled back" in restored.output
    # Without the site's anchors file (restored as well), the coordinator still notices.
    (target.state / "audit-anchors.jsonl").unlink()
    target.start()
    _wait_for(
        "the coordinator to detect the rollback",
        lambda: any(a.status == "rollback" for a in coordinator.store.audit_anchors("target")),
    )
    rollback = [a for a in coordinator.store.audit_anchors("target") if a.status == "rollback"]
    assert f"countersigned its entry {last.seq} ({last.hash[:12]}" in (rollback[0].message or "")
    coordinator_log = (tmp_path / "home" / "audit.jsonl").read_text()
    assert '"event":"site-audit-rollback"' in coordinator_log
    _wait_for(
        "the refusal in the site's audit",
        lambda: any(e["event"] == "audit-anchor-refused" for e in target.entries()),
    )
    assert target.alive


def test_a_site_restarts_after_key_rotation_with_its_audit_chain_intact(
    federation: tuple[Kits, Coordinator, dict[str, Site]],
) -> None:
    kits, coordinator, sites = federation
    before, after = study("integrity-rotate-1"), study("integrity-rotate-2")
    target = sites["target"]
    for s in (before, after):
        target.approve(s)
    target.start()
    run_study(coordinator, {"target": target}, before)
    target.close()
    runner = CliRunner()
    rotated = runner.invoke(app, ["provision", "rotate", str(kits.root), "target"])
    assert rotated.exit_code == 0, rotated.output
    target.start()  # the same kit folder, now with the new key
    _, fit = run_study(coordinator, {"target": target}, after)
    assert fit["num_contributions"] == 1 and target.alive, target.describe()
    entries = target.entries()
    handover = [i for i, e in enumerate(entries) if e["event"] == "key-rotated"]
    assert len(handover) == 1, [e["event"] for e in entries]
    assert entries[handover[0] + 1]["event"] == "agent-started"  # the first under the new key
    assert not (target.kit / "previous" / "001" / "key.pem").exists()  # handed over: deleted
    assert (target.kit / "previous" / "001" / "cert.pem").exists()
    verified = runner.invoke(
        app, ["audit", "verify", str(target.state / "audit.jsonl"), "--kit", str(target.kit)]
    )
    assert verified.exit_code == 0, verified.output
    assert f"ok: {len(entries)} entries" in verified.output
    # Only through the handover: with the new certificate alone, the old entries fail.
    alone = runner.invoke(
        app, ["audit", "verify", str(target.state / "audit.jsonl"), "--cert",
              str(target.kit / "cert.pem")],
    )  # fmt: skip
    assert alone.exit_code == 1 and "entry 1:" in alone.output, alone.output


def test_a_rolled_back_coordinator_audit_log_is_detected_by_its_sites(tmp_path: Path) -> None:
    require_mirror()
    kits = provision(tmp_path / "federation", ["target"], name="integrity-coordinator")
    home, saved = tmp_path / "home", tmp_path / "saved"
    first, second = study("integrity-coordinator-1"), study("integrity-coordinator-2")
    with running_coordinator(kits, home, round_retries=1) as coordinator:
        target = Site(kits, "target", tmp_path, coordinator.port)
        target.approve(first)
        target.approve(second)
        target.start()
        run_study(coordinator, {"target": target}, first)
        heads = target.state / "coordinator-heads.jsonl"
        _wait_for("the coordinator's head at the site", heads.exists)
        saved.mkdir()
        for name in ("audit.jsonl", "audit.jsonl.head"):  # an older copy of log and head
            shutil.copy2(home / name, saved / name)
        old = len((home / "audit.jsonl").read_text().splitlines())
        run_study(coordinator, {"target": target}, second)
        grown = lambda: json.loads(heads.read_text().splitlines()[-1])["seq"] > old  # noqa: E731
        _wait_for("a later coordinator head at the site", grown)
        target.close()
    for name in ("audit.jsonl", "audit.jsonl.head"):
        shutil.copy2(saved / name, home / name)
    with running_coordinator(kits, home, round_retries=1) as coordinator:
        target.port = coordinator.port
        target.start()
        _wait_for(
            "the site to detect the rollback",
            lambda: any(e["event"] == "coordinator-audit-rollback" for e in target.entries()),
        )
        found = [e["data"] for e in target.entries() if e["event"] == "coordinator-audit-rollback"]
        assert "the coordinator's log was rolled back" in found[0]["reason"], found
        _wait_for(
            "the agent to report it",
            lambda: any("coordinator's log was rolled back" in e for e in target.events),
        )
        target.close()
