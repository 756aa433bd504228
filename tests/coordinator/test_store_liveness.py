"""The task a reply names, failing a refused reply's task, failing tasks a site no longer holds."""

from __future__ import annotations

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
    assert split_task_key("s/1/2/fit/A") == ("s/1", 2, "fit", "A")
    for bad in ("", "s/x/fit/A", "s/1/fit", "/1/fit/A", "s/1/fit/"):
        assert split_task_key(bad) is None, bad


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
