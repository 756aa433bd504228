"""The coordinator's liveness row: fresh while it beats, stale after three missed beats,
``stopped`` when it stops; a new coordinator drops the rows of those that ended."""

from __future__ import annotations

import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.store_presence import is_fresh
from fedcare.errors import NotFoundError, ValidationError

from .helpers import FakeClock


def test_a_coordinator_is_fresh_while_it_beats(store: CoordinatorStore, clock: FakeClock) -> None:
    assert store.coordinator_presence() is None
    me = store.coordinator_started(listen="127.0.0.1:5", host="h", pid=7, beat_s=5.0)
    assert me.status == "running" and me.seen_at == clock.now and me.listen == "127.0.0.1:5"
    clock.advance(15)  # three beats missed exactly: still alive
    assert store.coordinator_presence() == me and is_fresh(me, clock.now)
    beat = store.coordinator_beat(me.id)
    assert beat.seen_at == clock.now
    clock.advance(15.5)
    stale = store.coordinator_presence()
    assert stale == beat and not is_fresh(stale, clock.now)


def test_stopping_and_a_new_start(store: CoordinatorStore, clock: FakeClock) -> None:
    old = store.coordinator_started(listen="127.0.0.1:5", host="h", pid=7)
    clock.advance(60)  # it died without stopping
    new = store.coordinator_started(listen="127.0.0.1:6", host="h", pid=8)
    assert store.coordinator_presence() == new
    with pytest.raises(NotFoundError):  # dropped as stale by the new one
        store.coordinator_beat(old.id)
    clock.advance(1)
    stopped = store.coordinator_stopped(new.id)
    assert stopped.status == "stopped" and stopped.stopped_at == clock.now
    assert store.coordinator_presence() == stopped and not is_fresh(stopped, clock.now)
    with pytest.raises(ValidationError, match="beat_s must be > 0"):
        store.coordinator_started(listen="x:1", host="h", pid=1, beat_s=0)
