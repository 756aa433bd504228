import json
import multiprocessing as mp
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit import AuditLog, verify_log
from fedcare.audit._format import load_private_key
from fedcare.errors import ConfigError, NotFoundError
from fedcare.site.approvals import ApprovalStore, parse_until
from fedcare.site.steward_seal import Steward

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


# Sealed decisions (signed with the kit key, recorded in the audit log) -----------------------
def _kit_key(folder: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / "key.pem"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def sealed_store(state: Path, key_path: Path) -> ApprovalStore:
    key = load_private_key(key_path)
    steward = Steward(
        [key.public_key()],
        state / "audit.jsonl",
        key=key,
        open_audit=lambda: AuditLog.open(state / "audit.jsonl", key_path=key_path, actor="s"),
    )
    return ApprovalStore.in_state_dir(state, steward=steward)


def test_a_sealed_approval_runs_and_is_in_the_audit_log(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "state", _kit_key(tmp_path / "kit"))
    row = store.approve("heart", H1, LATER, "ethics 12")
    assert row.sig and store.check("heart", H1, NOW).ok
    entries = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["data"]["sig"]) for e in entries] == [("approval", row.sig)]
    assert verify_log(tmp_path / "state" / "audit.jsonl").ok


def _raw(state: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(state / "approvals.sqlite")
    with db:
        db.execute(sql, args)
    db.close()


def test_a_row_inserted_by_hand_is_refused_as_invalid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = sealed_store(state, _kit_key(tmp_path / "kit"))
    store.approve("heart", H1, LATER)
    _raw(
        state,
        "INSERT INTO approvals (study, plan_hash, status, until, decided_at) VALUES (?,?,?,?,?)",
        "heart", H2, "approved", LATER.isoformat(), NOW.isoformat(),
    )  # fmt: skip
    answer = store.check("heart", H2, NOW)
    assert answer.kind == "approval-invalid", answer
    assert "no steward signature" in answer.message and "fedcare site approve" in answer.message
    # a signature copied from another row does not cover this one
    sig = store.get("heart", H1).sig  # type: ignore[union-attr]
    _raw(state, "UPDATE approvals SET sig = ? WHERE plan_hash = ?", sig, H2)
    assert "does not verify" in store.check("heart", H2, NOW).message


def test_an_edited_or_restored_approval_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = sealed_store(state, _kit_key(tmp_path / "kit"))
    store.approve("heart", H1, NOW + timedelta(hours=1))
    later = (NOW + timedelta(days=400)).isoformat()
    _raw(state, "UPDATE approvals SET until = ? WHERE plan_hash = ?", later, H1)
    assert store.check("heart", H1, NOW).kind == "approval-invalid"
    # a genuine approval, revoked, then its old row put back
    store.approve("heart", H2, LATER)
    old = (
        sqlite3.connect(state / "approvals.sqlite")
        .execute("SELECT status, until, decided_at, sig FROM approvals WHERE plan_hash = ?", (H2,))
        .fetchone()
    )
    store.revoke("heart", H2)
    _raw(
        state,
        "UPDATE approvals SET status = ?, until = ?, decided_at = ?, sig = ? WHERE plan_hash = ?",
        *old, H2,
    )  # fmt: skip
    answer = store.check("heart", H2, NOW)
    assert answer.kind == "approval-invalid" and "revocation" in answer.message, answer


def test_an_approval_missing_from_the_audit_log_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = _kit_key(tmp_path / "kit")
    store = sealed_store(state, key)
    store.approve("heart", H1, LATER)
    (state / "audit.jsonl").rename(state / "moved.jsonl")
    answer = sealed_store(state, key).check("heart", H1, NOW)
    assert answer.kind == "approval-invalid" and "holds no steward decision" in answer.message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-table"])
def test_a_corrupt_approvals_file_refuses_with_its_name_and_recovers(
    tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "state"
    key = _kit_key(tmp_path / "kit")
    sealed_store(state, key).approve("heart", H1, LATER)
    path = state / "approvals.sqlite"
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all " * 200)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        _raw(state, "DROP TABLE approvals")
        _raw(state, "CREATE TABLE approvals (id INTEGER, study TEXT)")
    store = sealed_store(state, key)  # opening does not raise
    answer = store.check("heart", H1, NOW)
    assert answer.kind == "approvals-unreadable", answer
    assert str(path) in answer.message
    path.write_bytes(good)
    assert store.check("heart", H1, NOW).ok
