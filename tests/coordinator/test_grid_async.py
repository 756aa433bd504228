"""The coordinator grid's asynchronous rounds (FedBuff): tasks of several versions open at once,
replies taken as they land, silent sites and cancelled tasks closed (late replies refused as
``round_closed``, even once the study ended)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from threading import Event, Thread

import numpy as np
import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.rows import TaskInfo
from fedcare.coordinator.store_liveness import task_key
from fedcare.errors import ConfigError, ReplyRefusedError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.strategy.async_loop import run_async
from fedcare.strategy.fedbuff import FedBuff
from fedcare.strategy.loop import RoundConfig
from fedcare.transport.framed import frame_reply, read_task

from .helpers import FakeClock, running_study

SITES = ("A", "B", "C")
_PARAMS = ArrayRecord({"w": np.zeros(2)})


def _grid(store: CoordinatorStore, clock: FakeClock, *live: str) -> tuple[CoordinatorGrid, str]:
    clock.now = datetime.now(timezone.utc)  # the grid judges liveness by the real clock
    sid = running_study(store, *SITES)
    for site in live:  # seen now, offering dataset "d": alive
        store.touch_site(site, datasets={"d": {"num_train": 10}})
    return CoordinatorGrid(store, store.artifacts, Hub(), sid, "d", default_timeout=60.0), sid


def _task(sid: str, site: str, version: int) -> Task:
    params = ArrayRecord({"w": np.full(2, float(version))})
    return Task(study_id=sid, round=version, site_id=site, kind="fit", params=params)


def _answer(store: CoordinatorStore, sid: str, site: str, value: float) -> str:
    """``site`` takes its task and replies with ``w = value``; the task's key."""
    task = store.next_task_for(site)
    assert task is not None and task.site_id == site
    reply = Reply(
        study_id=sid,
        round=task.round,
        site_id=site,
        kind="fit",
        arrays=ArrayRecord({"w": np.full(2, value)}),
        num_samples=5,
    )
    digest = store.artifacts.put(frame_reply(reply).to_bytes())
    store.store_reply(task.id, site, payload_digest=digest, num_samples=5)
    return f"{sid}/{task.round}/fit/{site}"


def test_tasks_of_several_versions_are_open_at_once_and_each_reply_comes_once(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, *SITES)
    grid.submit([_task(sid, "A", 0), _task(sid, "B", 0)])
    with pytest.raises(ConfigError, match="site 'A' already has an open submitted task"):
        grid.submit([_task(sid, "A", 1)])
    _answer(store, sid, "B", 1.5)
    [reply] = list(grid.arrivals(limit=1, timeout=5))
    assert (reply.site_id, reply.round, reply.error) == ("B", 0, None)
    np.testing.assert_array_equal(reply.arrays["w"], [1.5, 1.5])
    grid.submit([_task(sid, "B", 0), _task(sid, "C", 1)])  # B again, same version: new attempt
    assert [(t.site_id, t.round) for t in grid.open_tasks()] == [("A", 0), ("B", 0), ("C", 1)]
    b_rows = sorted(
        (t for t in store.list_tasks(sid, 0) if t.site_id == "B"), key=lambda t: t.attempt
    )
    assert [t.status for t in b_rows] == ["replied", "pending"]
    assert b_rows[1].attempt > b_rows[0].attempt  # the key names the newest
    _answer(store, sid, "C", 3.0)
    clock.advance(1)
    _answer(store, sid, "A", 2.0)
    got = [(r.site_id, r.round) for r in grid.arrivals(limit=5, timeout=0.5)]
    assert got == [("C", 1), ("A", 0)]  # by arrival; each once, B's still open
    assert [t.site_id for t in grid.open_tasks()] == ["B"]
    assert list(grid.arrivals(limit=1, timeout=0.3)) == []


def test_sites_gone_silent_give_no_reply_errors_and_their_tasks_are_closed(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, "A", "B")  # C was never seen: its task is not sent
    grid.submit([_task(sid, "A", 2), _task(sid, "B", 2), _task(sid, "C", 2)])
    assert sorted(t.site_id for t in store.list_tasks(sid, 2)) == ["A", "B"]
    clock.advance(-3600)
    store.touch_site("A")  # A and B were last seen an hour ago: silent
    store.touch_site("B")
    got = {}
    for _ in range(3):  # one at a time: each lost task is taken once, with its own reason
        [reply] = list(grid.arrivals(limit=1, timeout=5))
        assert reply.error is not None and reply.error.kind == "no-reply", reply
        got[reply.site_id] = reply.error.message
    assert "site 'C' is not available" in got["C"]
    assert "site 'A' went silent" in got["A"] and "site 'B' went silent" in got["B"]
    assert all(t.status == "expired" and t.closed_at for t in store.list_tasks(sid, 2))
    assert grid.open_tasks() == [] and list(grid.arrivals(timeout=1)) == []


def test_cancelled_tasks_refuse_late_replies_as_round_closed_even_after_the_study_ended(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, *SITES)
    grid.submit([_task(sid, "A", 3), _task(sid, "B", 4)])
    a = store.next_task_for("A")
    assert a is not None
    assert [t.site_id for t in grid.cancel_open()] == ["A", "B"]
    assert grid.open_tasks() == [] and list(grid.arrivals(timeout=0.2)) == []
    store.set_study_status(sid, "completed")
    with pytest.raises(ReplyRefusedError, match="round 3 closed at") as err:
        store.task_for_reply(f"{sid}/3/fit/A", "A")
    assert err.value.reason == "round_closed"
    with pytest.raises(ReplyRefusedError) as err:
        store.store_reply(a.id, "A", payload_digest=store.artifacts.put(b"late"))
    assert err.value.reason == "round_closed"
    noted = store.note_late_reply(f"{sid}/3/fit/A", "A")
    assert noted is not None and noted.late_at is not None
    assert store.task_replies([a.id]) == [(store.get_task(a.id), None)]


def test_a_reply_stored_after_the_last_step_is_recorded_late_once_and_never_taken(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, *SITES)
    noted: list[TaskInfo] = []
    grid.on_late = noted.append
    grid.submit([_task(sid, "A", 7), _task(sid, "B", 7)])
    key = _answer(store, sid, "A", 9.0)  # lands after the last step: nobody takes it
    [stored] = [t for t in store.list_tasks(sid, 7) if t.site_id == "A"]
    [(_, reply)] = store.task_replies([stored.id])
    assert reply is not None
    assert [t.site_id for t in grid.cancel_open()] == ["A", "B"]
    assert list(grid.arrivals(timeout=0.2)) == []  # never taken
    a = store.get_task(stored.id)
    assert (a.status, a.late_at) == ("expired", reply.received_at), a
    assert a.closed_at is not None and a.closed_at >= reply.received_at
    assert store.task_replies([a.id]) == [(a, reply)]  # the stored reply is kept
    assert [(t.id, t.late_at) for t in noted] == [(a.id, reply.received_at)]  # the audit entry
    with pytest.raises(ReplyRefusedError) as err:  # a retry of it: refused as a late reply
        store.task_for_reply(key, "A")
    assert err.value.reason == "round_closed"
    assert store.note_late_reply(key, "A") is None  # recorded once
    assert grid.cancel_open() == [] and len(noted) == 1
    assert store.close_answered_as_late(sid, [a.id]) == []


def test_a_version_sent_again_gets_a_key_of_its_own_that_a_late_reply_cannot_answer(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    clock.now = datetime.now(timezone.utc)
    sid = running_study(store, *SITES)
    for site in SITES:
        store.touch_site(site, datasets={"d": {"num_train": 10}})
    grid = CoordinatorGrid(store, store.artifacts, Hub(), sid, "d", default_timeout=0.3)
    grid.submit([_task(sid, "A", 3), _task(sid, "B", 3)])
    old_a, old_b = store.next_task_for("A"), store.next_task_for("B")
    assert old_a is not None and old_b is not None
    assert task_key(old_b) == f"{sid}/3/fit/B" and old_b.submission == 0
    reply = Reply(sid, 3, "A", "fit", ArrayRecord({"w": np.ones(2)}), num_samples=5)
    digest = store.artifacts.put(frame_reply(reply).to_bytes())
    store.store_reply(old_a.id, "A", payload_digest=digest, num_samples=5)
    got = {r.site_id: r for r in grid.arrivals(limit=2, timeout=5)}  # A's reply; B is lost
    assert got["A"].error is None and got["B"].error is not None
    assert store.get_task(old_b.id).closed_at is not None
    grid.submit([_task(sid, "A", 3), _task(sid, "B", 3)])  # the same version again
    new_a, new_b = store.next_task_for("A"), store.next_task_for("B")
    assert new_a is not None and new_b is not None
    for old, new in ((old_a, new_a), (old_b, new_b)):
        assert new.submission == new.attempt > old.attempt
        assert task_key(new) == f"{task_key(old)}#{new.attempt}"
        assert new.payload_digest is not None
        sent = read_task(store.artifacts.get(new.payload_digest))  # what the site is sent
        assert (sent.submission, sent.task_id) == (new.submission, task_key(new))
    # late replies to the earlier tasks: refused, recorded on those, never the new ones
    with pytest.raises(ReplyRefusedError) as err:
        store.task_for_reply(task_key(old_b), "B")
    assert err.value.reason == "round_closed"
    with pytest.raises(ReplyRefusedError) as err:
        store.task_for_reply(task_key(old_a), "A")
    assert err.value.reason == "already_answered"
    noted = store.note_late_reply(task_key(old_b), "B")
    assert noted is not None and noted.id == old_b.id
    assert store.get_task(new_b.id).late_at is None
    for new in (new_a, new_b):  # the new tasks are answered by their own keys only
        assert store.task_for_reply(task_key(new), new.site_id).id == new.id
        assert store.get_task(new.id).status == "delivered"


def _answer_as(store: CoordinatorStore, hub: Hub, site: str, value: float, stop: Event) -> None:
    """``site`` answers each task it is sent with ``w = value`` until ``stop``."""
    while not stop.wait(0.02):
        task = store.next_task_for(site)
        if task is None:
            continue
        reply = Reply(task.study_id, task.round, site, "fit", ArrayRecord({"w": np.full(2, value)}))
        digest = store.artifacts.put(frame_reply(replace(reply, num_samples=5)).to_bytes())
        store.store_reply(task.id, site, payload_digest=digest, num_samples=5)
        hub.notify()


def test_updates_buffered_before_a_restart_go_into_the_next_step_without_asking_again(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, *SITES)
    grid.submit([_task(sid, "A", 0), _task(sid, "B", 0), _task(sid, "C", 0)])
    _answer(store, sid, "A", 1.0)
    [taken] = list(grid.arrivals(limit=1, timeout=5))  # A's update: buffered, not stepped
    clock.advance(1)
    _answer(store, sid, "B", 3.0)  # B's: stored, not taken yet
    # the coordinator is killed here; a new one resumes the study from version 0
    hub = Hub()
    again = CoordinatorGrid(store, store.artifacts, hub, sid, "d", default_timeout=60.0)
    assert again.close_earlier_submissions() == 1  # C's task: its late reply is refused
    restored = again.unstepped()
    assert [(r.site_id, r.round, r.task_id) for r in restored] == [
        ("A", 0, taken.task_id),
        ("B", 0, f"{sid}/0/fit/B"),
    ]
    strategy = FedBuff(buffer_size=3, concurrency=3, server_lr=1.0)
    cfg = RoundConfig(study_id=sid, num_rounds=1, seed=0, evaluate_every=0, round_timeout=10.0)
    stop = Event()
    only_c = Thread(target=_answer_as, args=(store, hub, "C", 5.0, stop), daemon=True)
    only_c.start()  # A and B are sent new work but never answer it: C's update completes K
    try:
        state, [record] = run_async(again, strategy, strategy.init_state(_PARAMS), cfg)
    finally:
        stop.set()
        only_c.join()
    fit = record.fit
    assert fit["contributors"] == ["A", "B", "C"], fit
    assert [c["restored"] for c in fit["contributions"]] == [True, True, False]
    assert [c["task"] for c in fit["contributions"]][:2] == [r.task_id for r in restored]
    np.testing.assert_allclose(state.params["w"], [3.0, 3.0])  # (1 + 3 + 5) / 3
    # A step's record names the replies it took: once persisted, they are not taken again
    store.record_round(sid, 1, params=b"p", state=b"s", record=record.to_dict(), duration_s=0.0)
    later = CoordinatorGrid(store, store.artifacts, Hub(), sid, "d")
    assert later.unstepped() == []


def test_an_earlier_runs_open_tasks_are_closed_on_resume(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    grid, sid = _grid(store, clock, *SITES)
    grid.submit([_task(sid, "A", 5), _task(sid, "C", 6)])
    again = CoordinatorGrid(store, store.artifacts, Hub(), sid, "d")  # after a restart
    assert again.close_earlier_submissions() == 2
    assert all(t.closed_at is not None for t in store.list_tasks(sid))
