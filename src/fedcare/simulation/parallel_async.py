"""Asynchronous rounds on the parallel grid (:class:`~fedcare.simulation.parallel.ParallelGrid`):
``submit``, ``arrivals``, ``open_tasks`` and ``cancel_open`` of :class:`fedcare.grid.Grid`.

Submitted tasks go to the workers that own their sites and train there concurrently with any
other task; each is one call of the worker pool, kept in the pool's ``submitted`` until its reply
is read. A reply read while a synchronous exchange (an evaluation) waits on the same pipe is put
aside in the pool's ``arrived`` for :meth:`SubmittedTasks.arrivals`. A cancelled task's call is
forgotten, so its late reply is dropped when it is read, never yielded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from fedcare.errors import ConfigError, TransportError
from fedcare.records.messages import Reply, Task

__all__ = ["SubmittedTasks"]


class SubmittedTasks:
    """The asynchronous half of the parallel grid (a mixin: it uses the grid's pool)."""

    _pool: Any
    _sites: list[str]
    _record: bool
    wire: list[Task | Reply]

    def submit(self, tasks: Sequence[Task]) -> None:
        if self._pool.closed:
            raise TransportError("this parallel grid is closed; its workers are gone")
        busy = {t.site_id for t in self._pool.submitted.values()}
        for task in tasks:
            if task.site_id in busy:
                raise ConfigError(f"site {task.site_id!r} already has an open submitted task")
            busy.add(task.site_id)
        for task in list(tasks):
            if self._record:
                self.wire.append(task)
            if task.site_id not in self._sites:
                msg = f"no site {task.site_id!r} on this grid"
                self._pool.arrived.append(Reply.failure(task, "unknown-site", msg))
            elif (why := self._pool.why_dead(self._pool.owner[task.site_id])) is not None:
                msg = f"site {task.site_id!r}: {why}"
                self._pool.arrived.append(Reply.failure(task, "worker-died", msg))
            else:
                call = -next(self._pool.async_calls)  # a closed call's skip never hits it
                self._pool.submitted[call] = task
                self._pool.send(call, task)

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        """Replies to submitted tasks in arrival order (they train concurrently); a cancelled
        task's late reply is dropped when it comes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if limit is not None and limit < 1:
            return
        for count, reply in enumerate(self._pool.collect_submitted(deadline), start=1):
            if self._record:
                self.wire.append(reply)
            yield reply
            if limit is not None and count >= limit:
                return

    def open_tasks(self) -> list[Task]:
        return sorted(self._pool.submitted.values(), key=lambda t: t.site_id)

    def cancel_open(self) -> list[Task]:
        closed = self.open_tasks()
        self._pool.submitted.clear()
        self._pool.arrived.clear()  # read, not yet taken: they answer closed tasks
        return closed
