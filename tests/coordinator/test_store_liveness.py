"""The task a reply names, failing a refused reply's task, failing tasks a site no longer holds."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from fedcare.coordinator import CoordinatorStore, TaskSpec
from fedcare.coordinator.store_liveness import split_task_key, task_key
from fedcare.errors import ReplyRefusedError

from .helpers import FakeClock, running_study

HOUR = timedelta(hours=1)


def _deliver(store: CoordinatorStore, clock: FakeClock, sid: str, site: str, rnd: int) -> str:
    payload = store.artifacts.put(b"task payload")
    [task_id] = store.create_tasks(sid, rnd, 1, [TaskSpec(site, "fit", payload, clock.now + HOUR)])
    delivered = store.next_task_for(site)
    assert delivered is not None and delivered.id == task_id
    return task_id


def test_task_keys_round_trip() -> None:
    assert split_task_key("s/1/2/fit/A") == ("s/1", 2, "fit", "A", 0)
    assert split_task_key("s/1/2/fit/A#12") == ("s/1", 2, "fit", "A", 12)
    for bad in ("", "s/x/fit/A", "s/1/fit", "/1/fit/A", "s/1/fit/", "s/1/fit/A#", "s/1/fit/A#0"):
        assert split_task_key(bad) is None, bad
    assert split_task_key("s/1/fit/A#x") is None and split_task_key("s/1/fit/A#-1") is None


def test_the_task_a_reply_names_must_be_open_and_the_callers(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A", "B")
    task_id = _deliver(store, clock, sid, "A", 1)
    found = store.task_for_reply(f"{sid}/1/fit/A", "A")
    assert found.id == task_id and task_key(found) == f"{sid}/1/fit/A"
    cases = {
        "nonsense": "unknown_task",
        f"{sid}/2/fit/A": "unknown_task",
        f"{sid}/1/evaluate/A": "unknown_task",
        f"{sid}/1/fit/B": "wrong_site",
    }
    for key, reason in cases.items():
        with pytest.raises(ReplyRefusedError) as info:
            store.task_for_reply(key, "A")
        assert info.value.reason == reason, key
    clock.advance(2 * 3600)
    with pytest.raises(ReplyRefusedError, match="expired"):
        store.task_for_reply(f"{sid}/1/fit/A", "A")


def test_a_failed_task_has_an_error_reply_and_cannot_be_answered(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A")
    task_id = _deliver(store, clock, sid, "A", 1)
    assert store.fail_task(task_id, "A", "invalid_reply", "malformed reply: NaN")
    assert not store.fail_task(task_id, "A", "invalid_reply", "again")  # closed already
    [reply] = store.replies_for_round(sid, 1, 1)
    assert (reply.error_kind, reply.error_message) == ("invalid_reply", "malformed reply: NaN")
    with pytest.raises(ReplyRefusedError) as info:
        store.task_for_reply(f"{sid}/1/fit/A", "A")
    assert info.value.reason == "already_answered"


def test_hello_fails_the_delivered_tasks_a_site_no_longer_holds(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A", "B")
    lost = _deliver(store, clock, sid, "A", 1)
    kept = _deliver(store, clock, sid, "A", 2)
    other = _deliver(store, clock, sid, "B", 1)
    payload = store.artifacts.put(b"task payload")
    [pending] = store.create_tasks(sid, 3, 1, [TaskSpec("A", "fit", payload, None)])

    failed = store.fail_unheld_tasks("A", [f"{sid}/2/fit/A"])

    assert [t.id for t in failed] == [lost]
    status = {t.id: t.status for t in store.list_tasks(sid)}
    assert status == {lost: "failed", kept: "delivered", other: "delivered", pending: "pending"}
    [reply] = store.replies_for_round(sid, 1, 1)
    assert reply.error_kind == "site_restarted" and "without holding" in str(reply.error_message)
    assert store.fail_unheld_tasks("A", [f"{sid}/2/fit/A"]) == []


def test_a_task_its_round_closed_refuses_replies_and_notes_the_first_late_one(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A", "B")
    a = _deliver(store, clock, sid, "A", 1)
    b = _deliver(store, clock, sid, "B", 1)
    store.store_reply(a, "A", payload_digest=store.artifacts.put(b"reply"))
    assert store.note_late_reply(f"{sid}/1/fit/B", "B") is None  # open: not late
    assert store.close_round_tasks(sid, 1, 1) == 1  # B's; A's is answered
    closed = store.get_task(b)
    assert closed.status == "expired" and closed.closed_at == clock.now
    why = f"round 1 closed at {clock.now.isoformat()}"
    for refused in (
        lambda: store.task_for_reply(f"{sid}/1/fit/B", "B"),
        lambda: store.store_reply(b, "B", payload_digest=store.artifacts.put(b"late")),
    ):
        with pytest.raises(ReplyRefusedError, match=re.escape(why)) as info:
            refused()
        assert info.value.reason == "round_closed"
    clock.advance(5)
    noted = store.note_late_reply(f"{sid}/1/fit/B", "B")
    assert noted is not None and noted.late_at == clock.now and noted.closed_at == closed.closed_at
    assert store.note_late_reply(f"{sid}/1/fit/B", "B") is None  # noted once
    assert store.note_late_reply(f"{sid}/1/fit/B", "A") is None  # not A's task
    assert [r.site_id for r in store.replies_for_round(sid, 1, 1)] == ["A"]
    store.expire_tasks(sid, 1, 1)  # a deadline's expiry stays "expired" (the round may be redone)
    c = _deliver(store, clock, sid, "A", 2)
    store.expire_tasks(sid, 2, 1)
    assert store.get_task(c).closed_at is None
    with pytest.raises(ReplyRefusedError) as info:
        store.task_for_reply(f"{sid}/2/fit/A", "A")
    assert info.value.reason == "expired"
