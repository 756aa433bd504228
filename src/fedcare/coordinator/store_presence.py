"""The running coordinator's liveness row, so that a submission can tell it is running.

A coordinator process calls :meth:`PresenceMixin.coordinator_started` once it serves, then
:meth:`~PresenceMixin.coordinator_beat` every ``beat_s`` seconds, and
:meth:`~PresenceMixin.coordinator_stopped` when it stops.
:meth:`~PresenceMixin.coordinator_presence` returns the row that says most; :func:`is_fresh`
says whether that process is alive: ``running`` and seen within :data:`FRESH_BEATS` beats.
The row lives in the coordinator's own database, so the check works the same on SQLite and
PostgreSQL, from any host, and a process that died without stopping goes stale by itself
(unlike a pid file, nothing outlives it).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from fedcare.coordinator.db import CoordinatorRow
from fedcare.coordinator.rows import CoordinatorInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_duration, check_int
from fedcare.errors import NotFoundError, ValidationError

__all__ = ["BEAT_S", "FRESH_BEATS", "PresenceMixin", "is_fresh"]

#: Seconds between a running coordinator's liveness writes (the default).
BEAT_S = 5.0
#: A coordinator is alive while its row was written within this many beats.
FRESH_BEATS = 3


def is_fresh(info: CoordinatorInfo, now: datetime) -> bool:
    """Whether ``info`` is a running coordinator seen within ``FRESH_BEATS * beat_s`` of ``now``."""
    age = (now - info.seen_at).total_seconds()
    return info.status == "running" and age <= FRESH_BEATS * info.beat_s


class PresenceMixin(StoreBase):
    """Write and read the coordinator processes' liveness rows."""

    def coordinator_started(
        self, *, listen: str, host: str, pid: int, beat_s: float = BEAT_S
    ) -> CoordinatorInfo:
        """Add a ``running`` row for this process (a new id) and drop the rows that are no
        longer fresh (processes that stopped or died before).

        Raises
        ------
        ValidationError
            If ``beat_s`` is not a positive number or ``pid`` not an int.
        """
        if check_duration(beat_s, "beat_s") == 0:
            raise ValidationError("beat_s must be > 0, got 0")
        check_int(pid, "pid")
        now = self._now()
        row = CoordinatorRow(
            id=uuid.uuid4().hex,
            host=host[:255],
            pid=pid,
            listen=listen[:300],
            status="running",
            beat_s=float(beat_s),
            started_at=now,
            seen_at=now,
            stopped_at=None,
        )
        with self._tx(write=True) as s:
            for old in s.scalars(select(CoordinatorRow)):
                if not is_fresh(snapshot(CoordinatorInfo, old), now):
                    s.delete(old)
            s.add(row)
        return snapshot(CoordinatorInfo, row)

    def coordinator_beat(self, coordinator_id: str) -> CoordinatorInfo:
        """Note that coordinator ``coordinator_id`` is alive now.

        Raises
        ------
        NotFoundError
            If it has no row (another coordinator dropped it as stale: it missed its beats).
        """
        return self._mark(coordinator_id, stopped=False)

    def coordinator_stopped(self, coordinator_id: str) -> CoordinatorInfo:
        """Mark coordinator ``coordinator_id`` ``stopped`` (it stopped serving).

        Raises
        ------
        NotFoundError
            If it has no row.
        """
        return self._mark(coordinator_id, stopped=True)

    def _mark(self, coordinator_id: str, *, stopped: bool) -> CoordinatorInfo:
        now = self._now()
        with self._tx(write=True) as s:
            row = s.get(CoordinatorRow, coordinator_id)
            if row is None:
                raise NotFoundError(f"no coordinator with id {coordinator_id!r}")
            row.seen_at = now
            if stopped:
                row.status, row.stopped_at = "stopped", now
        return snapshot(CoordinatorInfo, row)

    def coordinator_presence(self) -> CoordinatorInfo | None:
        """A fresh ``running`` row if there is one, else the row seen last; None if no
        coordinator ever ran on this database (since migration 0005)."""
        now = self._now()
        with self._tx(write=False) as s:
            rows = [snapshot(CoordinatorInfo, r) for r in s.scalars(select(CoordinatorRow))]
        if not rows:
            return None
        return max(rows, key=lambda r: (is_fresh(r, now), r.seen_at))
