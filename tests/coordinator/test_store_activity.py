"""What is shown of tasks, replies and rounds: the same answers on SQLite and PostgreSQL (where
replies are looked up per task by a LATERAL subquery)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fedcare.coordinator import CoordinatorStore, TaskSpec
from fedcare.records.messages import ReplyError

from .helpers import FakeClock, running_study

HOUR = timedelta(hours=1)


def _round(
    store: CoordinatorStore, clock: FakeClock, sid: str, rnd: int, errors: dict[str, str]
) -> None:
    """A fit task per site of A, B, C in round ``rnd``: A replies, the sites in ``errors``
    answer with that error kind, C (unless in ``errors``) never answers."""
    payload = store.artifacts.put(b"task payload")
    store.create_tasks(sid, rnd, 0, [TaskSpec(s, "fit", payload, clock.now + HOUR) for s in "ABC"])
    clock.advance(1)
    for site in "ABC":
        task = store.next_task_for(site)
        assert task is not None
        if site in errors:
            store.store_reply(task.id, site, error=ReplyError(errors[site], f"no, round {rnd}"))
        elif site == "A":
            store.store_reply(task.id, site, payload_digest=store.artifacts.put(b"up"))
        clock.advance(1)


def _by_round(pairs: list[Any]) -> Callable[[str], tuple[int, str]]:
    rounds = {t.id: t.round for t, _ in pairs}
    return lambda task_id: (rounds[task_id], task_id)


def test_study_activity_and_its_light_rows(store: CoordinatorStore, clock: FakeClock) -> None:
    sid = running_study(store, "A", "B", "C")
    _round(store, clock, sid, 1, {"B": "policy-denied"})
    _round(store, clock, sid, 2, {"B": "crashed", "C": "plan-mismatch"})
    other = running_study(store, "A", "B", "C", name="other")
    _round(store, clock, other, 1, {"B": "policy-denied"})

    pairs = store.study_activity(sid)  # a round's tasks (same time) come in the order of ids
    assert [t.id for t, _ in pairs] == sorted((t.id for t, _ in pairs), key=_by_round(pairs))
    pairs.sort(key=lambda p: (p[0].round, p[0].site_id))
    assert [(t.round, t.site_id, t.status) for t, _ in pairs] == [
        (1, "A", "replied"), (1, "B", "failed"), (1, "C", "delivered"),
        (2, "A", "replied"), (2, "B", "failed"), (2, "C", "failed"),
    ]  # fmt: skip
    assert [None if r is None else r.error_kind for _, r in pairs] == [
        None, "policy-denied", None, None, "crashed", "plan-mismatch",
    ]  # fmt: skip
    assert pairs[0][1] is not None and pairs[0][1].payload_digest is not None
    assert all(r is None or (r.task_id, r.study_id) == (t.id, sid) for t, r in pairs)
    errors = store.study_activity(sid, min_round=2, errors_only=True)
    assert sorted((t.site_id, r and r.error_message) for t, r in errors) == [
        ("B", "no, round 2"), ("C", "no, round 2"),
    ]  # fmt: skip
    assert [t.round for t, _ in store.study_activity(sid, max_round=1)] == [1, 1, 1]

    rows = store.round_activity(sid, min_round=1)
    assert [r.round for r in rows] == [t.round for t, _ in pairs]
    rows.sort(key=lambda r: (r.round, r.site_id))
    assert [(r.round, r.site_id, r.status, r.error_kind) for r in rows] == [
        (t.round, t.site_id, t.status, r and r.error_kind) for t, r in pairs
    ]
    for row, (task, reply) in zip(rows, pairs, strict=True):
        assert (row.created_at, row.delivered_at, row.deadline) == (
            task.created_at, task.delivered_at, task.deadline,
        )  # fmt: skip
        assert row.received_at == (reply and reply.received_at)
        assert row.payload_digest == (reply and reply.payload_digest)
    assert [r.round for r in store.round_activity(sid, min_round=2)] == [2, 2, 2]
    assert all(r.created_at.utcoffset() == timedelta(0) for r in rows)  # aware, in UTC
    briefs, activity = store.round_view(sid, min_round=2)
    assert (briefs, activity) == ([], store.round_activity(sid, min_round=2))
    assert store.round_activity("no-such-study") == []


def test_round_briefs_are_list_rounds_without_the_digests(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    sid = running_study(store, "A")
    for rnd in range(3):
        clock.advance(5)
        record = {"round": rnd, "fit": {"train_loss": 0.5 - rnd / 10}}
        store.record_round(sid, rnd, params=b"p", state=b"s", record=record, duration_s=1.5)
    full = store.list_rounds(sid, min_round=1)
    briefs = store.round_briefs(sid, min_round=1)
    assert [(b.round, b.record, b.duration_s, b.completed_at) for b in briefs] == [
        (r.round, r.record, r.duration_s, r.completed_at) for r in full
    ]
    assert [b.round for b in briefs] == [1, 2]
    assert store.round_briefs("no-such-study") == []


def test_a_sites_latest_error_in_each_study(store: CoordinatorStore, clock: FakeClock) -> None:
    first = running_study(store, "A", "B", "C", name="first")
    _round(store, clock, first, 1, {"B": "policy-denied"})
    _round(store, clock, first, 2, {"B": "crashed"})
    _round(store, clock, first, 3, {})  # B's latest error is still round 2's
    second = running_study(store, "A", "B", "C", name="second")
    _round(store, clock, second, 1, {"B": "plan-mismatch", "C": "policy-denied"})
    third = running_study(store, "A", "B", "C", name="third")
    _round(store, clock, third, 1, {"C": "policy-denied"})

    found = sorted(store.site_errors("B"))
    assert found == sorted(
        [(first, 2, "fit", "crashed", "no, round 2"), (second, 1, "fit", "plan-mismatch",
         "no, round 1")]
    )  # fmt: skip
    assert {e.study_id for e in store.site_errors("C")} == {second, third}
    assert store.site_errors("A") == [] and store.site_errors("nowhere") == []


def test_refusals_at_the_start_of_studies(store: CoordinatorStore) -> None:
    refusing = running_study(store, "A", name="refusing")
    record = {"round": 0, "fit": {}, "refused_sites": {"B": "its feature schema differs"}}
    store.record_round(refusing, 0, params=b"p", state=b"s", record=record, duration_s=0.1)
    quiet = running_study(store, "A", name="quiet")
    store.record_round(quiet, 0, params=b"p", state=b"s", record={"round": 0}, duration_s=0.1)
    later = running_study(store, "A", name="later")
    store.record_round(later, 1, params=b"p", state=b"s", record=record, duration_s=0.1)
    assert store.start_refusals([refusing, quiet, later, "nowhere"]) == {
        refusing: {"B": "its feature schema differs"}
    }
    assert store.start_refusals([quiet]) == {} and store.start_refusals([]) == {}
