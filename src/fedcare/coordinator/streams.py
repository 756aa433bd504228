"""Bounds on what one site's streams can hold at the coordinator: threads, time, bytes.

- :class:`StreamLimiter`: at most ``per_site`` concurrent calls of one kind (PullTask,
  PushReply) per site; a call over the limit gets ``RESOURCE_EXHAUSTED`` at once, so one
  site cannot hold every server thread.
- :class:`IdleWatch`: one watchdog thread cancels a stream that made no progress (no chunk
  received or sent) for ``idle_s`` seconds, so a stalled upload frees its thread.
- :func:`reply_limit`: the largest reply a task can get, from the size of its own payload
  (which carries the study's parameter template): a reply is checked against it before any
  of its payload is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

__all__ = ["IdleWatch", "StreamLimiter", "reply_limit"]

#: Reply size rule: ``factor * task payload bytes + floor``, by task kind (see reply_limit).
ARRAY_REPLY_KINDS = ("fit", "secagg")
ARRAY_REPLY_FACTOR = 8  # masked (int64) or CKKS-encrypted (~31 bytes per value) updates
ARRAY_REPLY_FLOOR = 16 << 20  # protocol messages, one CKKS ciphertext, metrics, info
SMALL_REPLY_BYTES = 8 << 20  # evaluate / stats / analytics: metrics, sums and counts


def reply_limit(kind: str, task_payload_bytes: int, ceiling: int) -> int:
    """The largest reply accepted for a task of ``kind`` whose payload has the given size.

    A ``fit`` or ``secagg`` reply carries arrays shaped like the task's parameters (plain,
    masked or encrypted), so it may be up to ``ARRAY_REPLY_FACTOR`` times the task's payload
    plus ``ARRAY_REPLY_FLOOR``; an ``evaluate``, ``stats`` or ``analytics`` reply carries
    aggregates only: ``SMALL_REPLY_BYTES``. Never above ``ceiling``.
    """
    if kind in ARRAY_REPLY_KINDS:
        return min(ceiling, ARRAY_REPLY_FACTOR * max(0, task_payload_bytes) + ARRAY_REPLY_FLOOR)
    return min(ceiling, SMALL_REPLY_BYTES)


class StreamLimiter:
    """Counts each site's open calls of each kind and refuses those over ``per_site``."""

    def __init__(self, per_site: int) -> None:
        if per_site < 1:
            raise ValueError(f"per_site must be >= 1, got {per_site}")
        self.per_site = per_site
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], int] = {}

    @contextmanager
    def slot(self, site_id: str, kind: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold one of ``site_id``'s ``kind`` slots; abort with RESOURCE_EXHAUSTED if none."""
        key = (site_id, kind)
        with self._lock:
            held = self._open.get(key, 0)
            if held < self.per_site:
                self._open[key] = held + 1
        if held >= self.per_site:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"site {site_id!r} already has {held} open {kind} calls (the limit)",
            )
        try:
            yield
        finally:
            with self._lock:
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]

    def open_calls(self, site_id: str, kind: str) -> int:
        with self._lock:
            return self._open.get((site_id, kind), 0)


class _Watched:
    __slots__ = ("context", "last", "what")

    def __init__(self, context: grpc.ServicerContext, what: str) -> None:
        self.context, self.what, self.last = context, what, time.monotonic()


class IdleWatch:
    """Cancels watched calls idle for more than ``idle_s`` seconds (checked every second)."""

    def __init__(self, idle_s: float) -> None:
        if idle_s <= 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s}")
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._calls: dict[int, _Watched] = {}
        self.cut: list[str] = []  # what was cut, newest last (bounded)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-watch", daemon=True)
        self._thread.start()

    @contextmanager
    def watch(self, context: grpc.ServicerContext, what: str) -> Iterator[_Watched]:
        """Watch ``context`` while the block runs; :meth:`touch` the ticket on progress."""
        ticket = _Watched(context, what)
        with self._lock:
            self._calls[id(ticket)] = ticket
        try:
            yield ticket
        finally:
            with self._lock:
                self._calls.pop(id(ticket), None)

    @staticmethod
    def touch(ticket: _Watched) -> None:
        ticket.last = time.monotonic()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_s / 2)):
            now = time.monotonic()
            with self._lock:
                stale = [t for t in self._calls.values() if now - t.last > self.idle_s]
                for ticket in stale:
                    self._calls.pop(id(ticket), None)
            for ticket in stale:
                self.cut = [*self.cut[-99:], ticket.what]
                ticket.context.cancel()  # the blocked read or write in its thread ends
