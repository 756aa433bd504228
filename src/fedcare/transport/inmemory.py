"""A grid whose sites are handlers in this process: the simulation transport."""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence

from fedcare.errors import ConfigError, FedcareError, TransportError
from fedcare.grid import Grid, Quorum, Split
from fedcare.records.messages import Reply, Task

__all__ = ["InMemoryGrid", "SiteHandler", "call_site"]

SiteHandler = Callable[[Task], Reply]


class InMemoryGrid(Grid):
    """Runs each site's handler in turn, in this process.

    Replies are produced lazily, one per ``next()``, so a streaming aggregator holds one update
    at a time. A handler that raises yields an error reply naming the exception; a task for a
    site the grid does not know yields an ``unknown-site`` error reply. Tasks not started
    before ``timeout`` get no reply, as on a real network; with a ``quorum``, once
    ``quorum.replies`` tasks were answered without an error and ``quorum.grace_s`` passed since,
    the tasks not yet run get no reply either (the sites run one after another, so a task
    started within the grace period runs to its end). ``declared_rows`` gives, per split
    (``"train"``, ``"test"``), the rows each site holds, as real sites declare them at Hello.

    Asynchronous rounds run sequentially: :meth:`arrivals` runs the submitted tasks one at a
    time in submission order, so an asynchronous study is deterministic here.
    """

    def __init__(
        self,
        handlers: Mapping[str, SiteHandler],
        *,
        record: bool = False,
        declared_rows: Mapping[Split, Mapping[str, int]] | None = None,
    ) -> None:
        if not handlers:
            raise TransportError("an in-memory grid needs at least one site handler")
        self._handlers = dict(handlers)
        self._record = record
        self._rows = {split: dict(rows) for split, rows in (declared_rows or {}).items()}
        #: Every task and reply that crossed the grid when ``record`` is set (tests read the wire).
        self.wire: list[Task | Reply] = []
        self._submitted: deque[Task] = deque()

    def site_ids(self) -> list[str]:
        return sorted(self._handlers)

    def declared_rows(self, split: Split = "train") -> dict[str, int]:
        return dict(self._rows.get(split, {}))

    def subset(self, site_ids: Sequence[str]) -> InMemoryGrid:
        """A grid over some of this grid's sites (e.g. one site for a local baseline)."""
        missing = [s for s in site_ids if s not in self._handlers]
        if missing:
            raise TransportError(f"unknown sites {missing}; known: {self.site_ids()}")
        rows = {
            split: {s: n for s, n in r.items() if s in site_ids} for split, r in self._rows.items()
        }
        return InMemoryGrid(
            {s: self._handlers[s] for s in site_ids}, record=self._record, declared_rows=rows
        )

    def send_and_receive(
        self,
        tasks: Sequence[Task],
        *,
        timeout: float | None = None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        answered, grace_end = 0, float("inf")
        for task in list(tasks):
            if deadline is not None and time.monotonic() > deadline:
                return
            if time.monotonic() >= grace_end:  # set once the quorum replied
                return  # the round closed: the rest are not run, as after a deadline
            if self._record:
                self.wire.append(task)
            handler = self._handlers.get(task.site_id)
            if handler is None:
                yield Reply.failure(task, "unknown-site", f"no site {task.site_id!r} on this grid")
                continue
            reply = self._call(handler, task)
            if self._record:
                self.wire.append(reply)
            if quorum is not None and reply.error is None:
                answered += 1
                if answered == quorum.replies:
                    grace_end = time.monotonic() + quorum.grace_s
            yield reply

    def submit(self, tasks: Sequence[Task]) -> None:
        open_sites = {t.site_id for t in self._submitted}
        for task in tasks:
            if task.site_id in open_sites:
                raise ConfigError(f"site {task.site_id!r} already has an open submitted task")
            open_sites.add(task.site_id)
        self._submitted.extend(tasks)
        if self._record:
            self.wire.extend(tasks)

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        count = 0
        while self._submitted and (limit is None or count < limit):
            if deadline is not None and time.monotonic() > deadline:
                return
            task = self._submitted.popleft()
            count += 1
            handler = self._handlers.get(task.site_id)
            if handler is None:
                reply = Reply.failure(
                    task, "unknown-site", f"no site {task.site_id!r} on this grid"
                )
            else:
                reply = self._call(handler, task)
            if self._record:
                self.wire.append(reply)
            yield reply

    def open_tasks(self) -> list[Task]:
        return sorted(self._submitted, key=lambda t: t.site_id)

    def cancel_open(self) -> list[Task]:
        closed = sorted(self._submitted, key=lambda t: t.site_id)
        self._submitted.clear()
        return closed

    @staticmethod
    def _call(handler: SiteHandler, task: Task) -> Reply:
        return call_site(handler, task)


def call_site(handler: SiteHandler, task: Task) -> Reply:
    """``handler(task)``, a site's exception turned into its error reply (naming the exception):
    a site's crash must not take the grid (or the worker process running it) down."""
    try:
        return handler(task)
    except FedcareError as err:
        return Reply.failure(task, type(err).__name__, str(err))
    except Exception as err:
        tb = traceback.format_exception_only(type(err), err)[-1].strip()
        return Reply.failure(task, "exception", tb)
