import multiprocessing as mp
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fedcare.errors import ConfigError, NotFoundError
from fedcare.site.approvals import ApprovalStore, parse_until

H1, H2 = "a" * 64, "b" * 64
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
LATER = NOW + timedelta(days=30)


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore.in_state_dir(tmp_path / "state")


def test_an_unknown_plan_is_not_approved_and_says_how_to_approve(store: ApprovalStore) -> None:
    answer = store.check("heart", H1, NOW)
    assert not answer.ok and answer.kind == "plan-not-approved"
    assert "fedcare site approve --study heart --plan " + H1 in answer.message


def test_approved_until_expiry(store: ApprovalStore) -> None:
    row = store.approve("heart", H1, LATER, "ethics ref 12")
    assert row.status == "approved" and row.approval_id == f"approval-{row.id}"
    answer = store.check("heart", H1, NOW)
    assert answer.ok and answer.approval == row
    assert not store.check("other-study", H1, NOW).ok  # approvals are per study
    expired = store.check("heart", H1, LATER + timedelta(seconds=1))
    assert expired.kind == "approval-expired" and LATER.strftime("%Y-%m-%d") in expired.message


def test_refused_and_revoked_plans_give_their_reason(store: ApprovalStore) -> None:
    store.refuse("heart", H1, "no consent for this model")
    refused = store.check("heart", H1, NOW)
    assert refused.kind == "plan-refused" and "no consent for this model" in refused.message
    store.approve("heart", H1, LATER)
    store.approve("heart", H2, LATER)
    revoked = store.revoke("heart", note="patient group withdrew")
    assert sorted(r.plan_hash for r in revoked) == [H1, H2]
    for h in (H1, H2):
        answer = store.check("heart", h, NOW)
        assert answer.kind == "approval-revoked" and "withdrew from study 'heart'" in answer.message
    with pytest.raises(NotFoundError, match="no approved plan"):
        store.revoke("heart")


def test_pending_plans_are_listed_without_overriding_decisions(store: ApprovalStore) -> None:
    pending = store.record_pending("heart", H1, "summary text")
    assert pending.status == "pending" and not store.check("heart", H1, NOW).ok
    store.approve("heart", H1, LATER)
    assert store.record_pending("heart", H1).status == "approved"
    rows = store.list()
    assert [(r.study, r.status, r.summary) for r in rows] == [("heart", "approved", "summary text")]


def test_expiry_needs_a_timezone_and_parses_dates(store: ApprovalStore) -> None:
    with pytest.raises(ConfigError, match="timezone"):
        store.approve("heart", H1, datetime(2026, 1, 1))
    assert parse_until("2026-12-31") == datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="--until"):
        parse_until("next week")


def _approve_many(path: str, prefix: str, n: int) -> None:
    store = ApprovalStore(Path(path))
    for i in range(n):
        store.approve("heart", f"{prefix}{i:04d}", LATER)


def test_concurrent_writers_from_threads_and_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "approvals.sqlite"
    ApprovalStore(path)
    proc = mp.get_context("spawn").Process(target=_approve_many, args=(str(path), "p", 15))
    proc.start()
    threads = [
        threading.Thread(target=_approve_many, args=(str(path), f"t{k}-", 15)) for k in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc.join(60)
    assert proc.exitcode == 0
    rows = ApprovalStore(path).list()
    assert len(rows) == 60 and len({r.plan_hash for r in rows}) == 60
