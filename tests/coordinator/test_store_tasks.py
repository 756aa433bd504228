"""Tasks and replies: exactly-once delivery, and every refused reply changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from fedcare.coordinator import CoordinatorStore, TaskSpec
from fedcare.errors import ConflictError, NotFoundError, ReplyRefusedError, ValidationError
from fedcare.records.messages import ReplyError

from .helpers import FakeClock, dump, running_study

HOUR = timedelta(hours=1)


def _tasks(
    store: CoordinatorStore, clock: FakeClock, sid: str, sites: list[str], rnd: int = 1
) -> list[str]:
    payload = store.artifacts.put(b"task payload")
    specs = [TaskSpec(s, "fit", payload, clock.now + HOUR) for s in sites]
    return store.create_tasks(sid, rnd, 1, specs)


def test_create_deliver_reply_collect(store: CoordinatorStore, clock: FakeClock) -> None:
    sid = running_study(store, "A", "B")
    ids = _tasks(store, clock, sid, ["A", "B"])
    assert [t.status for t in store.list_tasks(sid, 1, 1)] == ["pending", "pending"]
    clock.advance(1)
    task = store.next_task_for("A")
    assert task is not None and task.id == ids[0] and task.site_id == "A"
    assert (task.status, task.delivered_at) == ("delivered", clock.now)
    assert store.get_task(task.id) == task
    assert store.next_task_for("A") is None
    update = store.artifacts.put(b"update from A")
    reply = store.store_reply(task.id, "A", payload_digest=update, num_samples=120)
    assert (reply.ok, reply.kind, reply.round, reply.num_samples) == (True, "fit", 1, 120)
    b_task = store.next_task_for("B")
    assert b_task is not None
    failed = store.store_reply(b_task.id, "B", error=ReplyError("policy", "plan not approved"))
    assert (failed.ok, failed.error_kind, failed.error_message) == (
        False,
        "policy",
        "plan not approved",
    )
    assert store.replies_for_round(sid, 1, 1) == [reply, failed]
    assert store.replies_for_round(sid, 1, 1, kind="evaluate") == []
    assert store.replies_for_round(sid, 1, 2) == []
    assert {t.id: t.status for t in store.list_tasks(sid)} == {
        ids[0]: "replied",
        ids[1]: "failed",
    }


def test_tasks_go_out_oldest_first_and_not_after_the_deadline(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A")
    first = store.create_tasks(sid, 1, 1, [("A", "fit", None, clock.now + timedelta(seconds=5))])
    clock.advance(1)
    second = store.create_tasks(sid, 1, 1, [("A", "evaluate", None, None)])
    clock.advance(10)  # the first task's deadline passed
    task = store.next_task_for("A")
    assert task is not None and task.id == second[0]
    assert store.next_task_for("A") is None
    assert store.get_task(first[0]).status == "pending"


def test_create_tasks_refusals_create_nothing(store: CoordinatorStore, clock: FakeClock) -> None:
    sid = running_study(store, "A", "B")
    store.set_site_status("B", "withdrawn")
    pending = store.create_study("later", {}, seed=1)
    before = dump(store)
    cases: list[tuple[str, list[tuple], type[Exception], str]] = [
        (sid, [("A", "fit", None, None), ("B", "fit", None, None)], ConflictError, "'withdrawn'"),
        (sid, [("A", "fit", None, None), ("Z", "fit", None, None)], NotFoundError, "'Z'"),
        (pending, [("A", "fit", None, None)], ConflictError, "'pending', not 'running'"),
        (sid, [("A", "fit", "ab" * 32, None)], NotFoundError, "not stored"),
        (sid, [("A", "fit", "xyz", None)], ValidationError, "payload_digest"),
        (sid, [("A", "fit", None, clock.now.replace(tzinfo=None))], ValidationError, "aware"),
        (sid, [("A", "", None, None)], ValidationError, r"specs\[0\].kind"),
    ]
    for study, specs, error, match in cases:
        with pytest.raises(error, match=match):
            store.create_tasks(study, 1, 1, specs)
    assert dump(store) == before


def test_inactive_sites_get_no_tasks(store: CoordinatorStore, clock: FakeClock) -> None:
    sid = running_study(store, "A")
    (task_id,) = _tasks(store, clock, sid, ["A"])
    store.set_site_status("A", "withdrawn")
    assert store.get_task(task_id).status == "expired"
    with pytest.raises(ConflictError, match="'withdrawn'; it gets no tasks"):
        store.next_task_for("A")
    with pytest.raises(NotFoundError, match="'nobody'"):
        store.next_task_for("nobody")


def test_a_study_that_stops_running_stops_delivering(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A")
    _tasks(store, clock, sid, ["A"])
    store.set_study_status(sid, "cancelled", reason="operator")
    assert store.next_task_for("A") is None
    assert [t.status for t in store.list_tasks(sid)] == ["expired"]


@pytest.mark.parametrize("num_stores", [1, 3])
def test_concurrent_delivery_is_exactly_once(
    make_store: Callable[..., CoordinatorStore], clock: FakeClock, num_stores: int
) -> None:
    stores = [make_store() for _ in range(num_stores)]
    sid = running_study(stores[0], "A", "B")
    ids = set(_tasks(stores[0], clock, sid, ["A"] * 30 + ["B"] * 5))
    threads_per_store = 8 // num_stores + 1
    barrier = threading.Barrier(num_stores * threads_per_store)
    got: list[str] = []
    errors: list[BaseException] = []

    def drain(store: CoordinatorStore) -> None:
        barrier.wait()
        try:
            while (task := store.next_task_for("A")) is not None:
                got.append(task.id)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [
        threading.Thread(target=drain, args=(s,)) for s in stores for _ in range(threads_per_store)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == len(set(got)) == 30
    a_tasks = {t.id for t in stores[0].list_tasks(sid) if t.site_id == "A"}
    assert set(got) == a_tasks and a_tasks < ids
    assert all(t.status == "delivered" for t in stores[0].list_tasks(sid) if t.site_id == "A")
    assert all(t.status == "pending" for t in stores[0].list_tasks(sid) if t.site_id == "B")


def test_concurrent_replies_to_one_task(
    make_store: Callable[..., CoordinatorStore], clock: FakeClock
) -> None:
    stores = [make_store() for _ in range(4)]
    sid = running_study(stores[0], "A")
    _tasks(stores[0], clock, sid, ["A"])
    task = stores[0].next_task_for("A")
    assert task is not None
    digest = stores[0].artifacts.put(b"update")
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def reply(store: CoordinatorStore) -> None:
        barrier.wait()
        try:
            store.store_reply(task.id, "A", payload_digest=digest, num_samples=1)
            outcomes.append("ok")
        except ReplyRefusedError as err:
            outcomes.append(err.reason)

    threads = [threading.Thread(target=reply, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already_answered"] * 3 + ["ok"]
    assert len(stores[0].replies_for_round(sid, 1, 1)) == 1


def _refusal_setup(store: CoordinatorStore, clock: FakeClock, reason: str) -> tuple[str, str]:
    """Bring the database to a state where a reply is refused for ``reason``: (task, site)."""
    sid = running_study(store, "A", "B")
    a_id, _ = _tasks(store, clock, sid, ["A", "B"])
    if reason != "not_delivered":
        assert store.next_task_for("A") is not None
    if reason == "unknown_task":
        return "f" * 32, "A"
    if reason == "wrong_site":
        return a_id, "B"
    if reason == "site_inactive":
        store.set_site_status("A", "revoked")
    elif reason == "expired":
        store.expire_tasks(sid, 1, 1)
    elif reason == "deadline_passed":
        clock.advance(2 * HOUR.total_seconds())
    elif reason == "already_answered":
        store.store_reply(a_id, "A", error=ReplyError("oom", "out of memory"))
    elif reason == "study_not_running":
        store.set_study_status(sid, "failed", reason="too few sites")
    return a_id, "A"


REASONS = [
    "unknown_task",
    "wrong_site",
    "site_inactive",
    "not_delivered",
    "expired",
    "deadline_passed",
    "already_answered",
    "study_not_running",
    "payload_missing",
]


@pytest.mark.parametrize("reason", REASONS)
def test_every_refused_reply_changes_nothing(
    store: CoordinatorStore, clock: FakeClock, reason: str
) -> None:
    task_id, site_id = _refusal_setup(store, clock, reason)
    digest = "0" * 64 if reason == "payload_missing" else store.artifacts.put(b"an update")
    before = dump(store)
    with pytest.raises(ReplyRefusedError) as info:
        store.store_reply(task_id, site_id, payload_digest=digest, num_samples=5)
    expected = "expired" if reason == "deadline_passed" else reason
    refused = info.value
    assert (refused.reason, refused.task_id, refused.site_id) == (expected, task_id, site_id)
    assert f"({expected})" in str(refused) and repr(task_id) in str(refused)
    assert dump(store) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of payload_digest and error"),
        ({"payload_digest": "a" * 64, "error": ReplyError("x", "y")}, "exactly one"),
        ({"payload_digest": "nothex"}, "payload_digest must be"),
        ({"payload_digest": "a" * 64, "num_samples": -1}, "num_samples"),
        ({"payload_digest": "a" * 64, "num_samples": 2**40}, "num_samples"),
        ({"error": ReplyError("", "no kind")}, "error.kind"),
    ],
)
def test_malformed_replies(store: CoordinatorStore, kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        store.store_reply("t", "A", **kwargs)


def test_expire_tasks_only_touches_open_tasks_of_that_attempt(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A", "B")
    a_id, b_id = _tasks(store, clock, sid, ["A", "B"])
    clock.advance(1)  # tasks go out oldest first
    (other,) = store.create_tasks(sid, 1, 2, [("A", "fit", None, None)])
    task = store.next_task_for("A")
    assert task is not None and task.id == a_id
    store.store_reply(a_id, "A", error=ReplyError("x", "y"))
    assert store.expire_tasks(sid, 1, 1) == 1
    statuses = {t.id: t.status for t in store.list_tasks(sid)}
    assert statuses == {a_id: "failed", b_id: "expired", other: "pending"}


def test_site_outcomes_are_those_of_the_rounds_last_attempt(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A", "B", "C")
    assert store.site_outcomes(sid, 1) == {}
    _tasks(store, clock, sid, ["A", "B"])  # attempt 1: A times out
    payload = store.artifacts.put(b"task payload")
    store.create_tasks(sid, 1, 2, [TaskSpec(s, "fit", payload, clock.now + HOUR) for s in "ABC"])
    while (task := store.next_task_for("A")) is not None and task.attempt == 1:
        pass
    assert task is not None and task.attempt == 2
    store.store_reply(task.id, "A", error=ReplyError("plan-not-approved", "awaits the steward"))
    b = next(t for t in store.list_tasks(sid, 1, 2) if t.site_id == "B")
    while store.next_task_for("B") is not None:
        pass
    store.store_reply(b.id, "B", payload_digest=store.artifacts.put(b"update"), num_samples=3)
    assert store.site_outcomes(sid, 1) == {"A": "plan-not-approved", "B": "ok", "C": "no-reply"}
