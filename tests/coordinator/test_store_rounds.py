"""Recording rounds: atomic, never twice, and read back as the last checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from fedcare.coordinator import CoordinatorStore, store_rounds
from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.errors import (
    ArtifactCorruptError,
    ConflictError,
    NotFoundError,
    ValidationError,
)

from .helpers import FakeClock, dump, running_study

RECORD = {"round": 1, "duration_s": 0.5, "fit": {"num_contributions": 2, "loss": 0.3}}


def _record(store: CoordinatorStore, sid: str, rnd: int, tag: bytes = b"") -> Any:
    return store.record_round(
        sid,
        rnd,
        params=b"params-%d" % rnd + tag,
        state=b"state-%d" % rnd + tag,
        record={**RECORD, "round": rnd},
        duration_s=0.5,
    )


def test_record_and_read_back(store: CoordinatorStore) -> None:
    sid = running_study(store, "A")
    assert store.last_completed_round(sid) is None
    first = _record(store, sid, 0)
    assert first.status == "completed" and first.completed_at.tzinfo is not None
    _record(store, sid, 1)
    assert store.last_completed_round(sid) == (1, b"params-1", b"state-1")
    assert store.get_study(sid).last_completed_round == 1
    assert [r.round for r in store.list_rounds(sid)] == [0, 1]
    assert store.get_round(sid, 1).record == {**RECORD, "round": 1}
    with pytest.raises(NotFoundError, match="no recorded round 7"):
        store.get_round(sid, 7)


def test_nan_in_a_record_is_stored_as_null(store: CoordinatorStore) -> None:
    sid = running_study(store, "A")
    record = {"evaluate": {"auroc": float("nan")}}
    stored = store.record_round(sid, 1, params=b"p", state=b"s", record=record, duration_s=1)
    assert stored.record == {"evaluate": {"auroc": None}}
    assert store.get_round(sid, 1).record == {"evaluate": {"auroc": None}}


def test_duplicate_round_is_refused_and_changes_nothing(store: CoordinatorStore) -> None:
    sid = running_study(store, "A")
    _record(store, sid, 1)
    files = sorted(store.artifacts.root.rglob("*"))
    before = dump(store)
    with pytest.raises(ConflictError, match="round 1 is already recorded"):
        _record(store, sid, 1, tag=b"other bytes")
    assert dump(store) == before
    assert sorted(store.artifacts.root.rglob("*")) == files
    assert store.last_completed_round(sid) == (1, b"params-1", b"state-1")


@pytest.mark.parametrize(
    ("setup", "rnd", "error", "match"),
    [
        ([], 2, ConflictError, "the next must be 0 or 1"),
        ([1], 3, ConflictError, "the next must be 2"),
        ([1, 2], 1, ConflictError, "round 1 is already recorded"),
        ([], -1, ValidationError, "round must be an int"),
    ],
)
def test_rounds_come_in_order(
    store: CoordinatorStore, setup: list[int], rnd: int, error: type, match: str
) -> None:
    sid = running_study(store, "A")
    for r in setup:
        _record(store, sid, r)
    before = dump(store)
    with pytest.raises(error, match=match):
        _record(store, sid, rnd)
    assert dump(store) == before


def test_only_running_studies_record_rounds(store: CoordinatorStore) -> None:
    sid = store.create_study("s", {}, seed=1)
    with pytest.raises(ConflictError, match=r"study .* is 'pending', not 'running'"):
        _record(store, sid, 1)
    with pytest.raises(NotFoundError, match="'missing'"):
        _record(store, "missing", 1)
    assert list(store.artifacts.root.rglob("*-*")) == []


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("crash")


@contextmanager
def _fail_after_insert() -> Iterator[None]:
    """The round row is added, then the process dies before the tasks are expired."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_rounds, "_expire_open_tasks", _boom)
        yield


@contextmanager
def _fail_at_commit() -> Iterator[None]:
    """Everything is flushed, then the commit fails."""
    event.listen(Session, "before_commit", _boom)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", _boom)


@contextmanager
def _fail_between_artifacts() -> Iterator[None]:
    """The params artifact is written, then the process dies before the state artifact."""
    original = ArtifactStore.put
    calls: list[bytes] = []

    def put(self: ArtifactStore, data: bytes) -> str:
        calls.append(data)
        return _boom() if len(calls) == 2 else original(self, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ArtifactStore, "put", put)
        yield


@pytest.mark.parametrize("crash", [_fail_after_insert, _fail_at_commit, _fail_between_artifacts])
def test_a_crash_before_commit_leaves_no_half_round(
    store: CoordinatorStore,
    clock: FakeClock,
    crash: Callable[[], AbstractContextManager[None]],
) -> None:
    sid = running_study(store, "A", "B")
    _record(store, sid, 1)
    payload = store.artifacts.put(b"task")
    store.create_tasks(sid, 2, 1, [("A", "fit", payload, clock.now + timedelta(hours=1))])
    store.next_task_for("A")
    before = dump(store)
    with crash(), pytest.raises(RuntimeError, match="crash"):
        _record(store, sid, 2)
    assert dump(store) == before
    assert store.last_completed_round(sid) == (1, b"params-1", b"state-1")
    assert [t.status for t in store.list_tasks(sid, 2)] == ["delivered"]
    _record(store, sid, 2)  # the retry succeeds
    assert store.last_completed_round(sid) == (2, b"params-2", b"state-2")
    assert [t.status for t in store.list_tasks(sid, 2)] == ["expired"]


def test_concurrent_recorders_of_one_round(make_store: Callable[..., CoordinatorStore]) -> None:
    stores = [make_store() for _ in range(4)]
    sid = running_study(stores[0], "A")
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def record(store: CoordinatorStore, i: int) -> None:
        barrier.wait()
        try:
            _record(store, sid, 1, tag=b"%d" % i)
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=record, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["ok"]
    assert len(stores[0].list_rounds(sid)) == 1


def test_a_corrupt_checkpoint_is_reported(store: CoordinatorStore) -> None:
    sid = running_study(store, "A")
    stored = _record(store, sid, 1)
    store.artifacts.path(stored.params_digest).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorruptError, match=stored.params_digest):
        store.last_completed_round(sid)
    store.artifacts.delete(stored.state_digest)
    store.artifacts.put(b"params-1")
    with pytest.raises(NotFoundError, match=stored.state_digest):
        store.last_completed_round(sid)


def test_records_persist_across_reopen(make_store: Callable[..., CoordinatorStore]) -> None:
    first = make_store()
    sid = running_study(first, "A")
    _record(first, sid, 1)
    first.close()
    assert make_store().last_completed_round(sid) == (1, b"params-1", b"state-1")
