"""A grid whose sites train concurrently in worker processes: ``fedcare simulate --workers N``.

:class:`ParallelGrid` starts ``N`` worker processes (``multiprocessing``'s *spawn* context) and
gives each the :class:`~fedcare.data.base.SiteData` of its sites, assigned round-robin in sorted
site order. A worker builds its sites' :class:`~fedcare.site.app.SiteApp` s once, so datasets
are sent once per worker, not per task, and each site's state across rounds (SCAFFOLD control
variates, personal models, compression residuals, its privacy ledger) stays in the one process
that owns it, exactly as in the sequential in-memory grid.

A round's tasks go to the workers that own their sites, the round's parameters once per worker (a
task whose params are those its worker got last goes without them: 1,000 tasks of a 1M-parameter
model cost one copy per worker; large ones in a shared-memory file); replies come back through one
pipe per worker as each is done and are yielded one at a time, in arrival order (the round loop
sums them in site order, :func:`fedcare.strategy.loop.in_site_order`, so the model is the same bit
for bit as the sequential run's). A large reply's arrays come through a shared-memory slot of its
worker (:mod:`fedcare.simulation.reply_slots`), only a small header through the pipe, and the
parent's arrays are views of the slot; a worker has a few slots, and with none free once the parent
read all it sent (the parent holds their replies) a reply goes through the pipe whole, the worker
waiting until it is read. A torch model's results depend on torch's thread count, so each worker
uses this process's (when torch is loaded here), not a share of the cores: on a machine with few
cores the workers oversubscribe them. A call closes at its deadline (``timeout``) or, with a
:class:`~fedcare.grid.Quorum`, once ``quorum.replies`` tasks were answered without an error and
``quorum.grace_s`` passed since: its tasks not yet answered get no reply, a reply that comes later
is dropped (as a stale one of an earlier call is), and a worker skips the tasks of a closed call it
has not started.

A handler that raises gives an error reply naming the exception (as
:class:`~fedcare.transport.inmemory.InMemoryGrid` does); a worker that dies gives each of its
unanswered tasks a ``worker-died`` error reply naming the site and the exit code, and its
sites answer ``worker-died`` from then on. :meth:`ParallelGrid.close` (or leaving
its ``with`` block) stops the workers; none outlives the grid.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import pickle
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import TracebackType
from typing import Any

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError, TransportError
from fedcare.grid import Grid, Quorum
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.simulation.owned_sites import OwnedSites
from fedcare.simulation.parallel_async import SubmittedTasks
from fedcare.simulation.parallel_worker import START_S, await_ready, worker_main
from fedcare.simulation.reply_slots import MIN_BYTES, Layout, ReplySlots
from fedcare.site.app import Mod

__all__ = ["ParallelGrid", "check_workers"]

#: Seconds a closing grid waits for a worker to finish before terminating it.
JOIN_S = 10.0


def check_workers(workers: object) -> int:
    """``workers`` as a count of worker processes.

    Raises
    ------
    ConfigError
        When ``workers`` is not an integer >= 1.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


class _Pool:
    """The worker processes, their task queues and reply pipes."""

    def __init__(
        self,
        sites: Sequence[SiteData],
        workers: int,
        mods: Mapping[str, Sequence[Mod]],
        feature_names: tuple[str, ...],
        site_reports: Path | None,
    ) -> None:
        ctx = mp.get_context("spawn")
        torch = sys.modules.get("torch")  # a torch model's sums depend on its thread count
        threads = torch.get_num_threads() if torch is not None else None
        ordered = sorted(sites, key=lambda s: s.site_id)
        n = min(workers, len(ordered))
        self.owner = {s.site_id: i % n for i, s in enumerate(ordered)}
        self.inboxes: list[Any] = []
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self.dead: dict[int, str] = {}  # worker -> why it is gone
        self.calls = itertools.count(1)
        #: The last call closed with tasks unanswered: workers skip tasks of calls up to it.
        self.closed_call = ctx.Value("q", 0, lock=False)
        self.closed = False
        self.sent: list[ArrayRecord | None] = [None] * n  # the last params each worker got
        #: Asynchronous tasks not yet answered, by call (negative: never skipped as closed).
        self.submitted: dict[int, Task] = {}
        self.async_calls = itertools.count(1)
        self.arrived: deque[Reply] = deque()  # their replies, read but not yet taken
        self.slots = ReplySlots(ctx, n)  # large replies' arrays, in shared memory
        for w in range(n):
            mine = [s for s in ordered if self.owner[s.site_id] == w]
            own_mods = {s.site_id: tuple(mods.get(s.site_id, ())) for s in mine}
            inbox = ctx.Queue()
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=worker_main,
                args=(
                    mine,
                    own_mods,
                    feature_names,
                    site_reports,
                    inbox,
                    send,
                    threads,
                    self.closed_call,
                    self.slots.writer_args(w),
                ),
                name=f"fedcare-site-worker-{w}",
                daemon=True,
            )
            proc.start()
            send.close()  # the worker holds the sending end; EOF when it dies
            self.inboxes.append(inbox)
            self.conns.append(recv)
            self.procs.append(proc)
        await_ready(self.conns, self.procs, self.dead, time.monotonic() + START_S)

    def send(self, call: int, task: Task) -> None:
        """Queue ``task`` for its worker, without params that worker was last sent (the same);
        large new params go in a shared-memory file, the task without them."""
        w = self.owner[task.site_id]
        again, self.sent[w] = task.params is self.sent[w], task.params
        sent: bool | Layout | None = not again
        if sent and task.params.nbytes >= MIN_BYTES:
            sent = self.slots.put_params(w, task.params) or True  # no room: pickled
        bare = task if sent is True else replace(task, params=ArrayRecord())
        self.inboxes[w].put((call, bare, sent))

    def why_dead(self, w: int) -> str | None:
        """Why worker ``w`` is gone, or ``None`` while it runs."""
        if w not in self.dead and not self.procs[w].is_alive():
            self.dead[w] = f"worker process {w} died (exit code {self.procs[w].exitcode})"
        return self.dead.get(w)

    def collect(
        self,
        call: int,
        pending: dict[str, Task],
        deadline: float | None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        """Yield the replies to ``pending`` (call ``call``) as they arrive, until the
        deadline or, with ``quorum``, its grace period after its replies came."""
        answered = 0
        try:
            while pending:
                busy = {self.owner[s] for s in pending}
                waits: list[Any] = [self.conns[w] for w in busy]
                waits += [self.procs[w].sentinel for w in busy]
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = wait(waits, timeout=left)
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    return  # unanswered tasks get no reply, as on a real network
                for w in sorted(busy):
                    if self.conns[w] in ready or self.procs[w].sentinel in ready:
                        for reply in self._read(w, call, pending):
                            if quorum is not None and reply.error is None:
                                answered += 1
                                if answered == quorum.replies:
                                    end = time.monotonic() + quorum.grace_s
                                    deadline = end if deadline is None else min(deadline, end)
                            yield reply
                            del reply
                if deadline is not None and pending and time.monotonic() >= deadline:
                    return
        finally:
            if pending:  # closed early: its tasks not yet started are skipped
                self.closed_call.value = max(self.closed_call.value, call)

    def _read(self, w: int, call: int, pending: dict[str, Task]) -> Iterator[Reply]:
        conn = self.conns[w]
        try:
            while conn.poll():
                got, reply, layout = conn.recv()
                if got == 0:  # the worker could not build its sites
                    self.dead[w] = f"worker process {w} failed to start its sites: {reply}"
                    continue
                self.slots.seen(w)
                keep = got == call and reply.site_id in pending
                if not keep and self.submitted.pop(got, None) is None:
                    if layout is not None:  # a cancelled or finished call's late reply, dropped
                        self.slots.drop(w, layout)
                    continue
                if layout is not None:
                    reply = self.slots.unpack(w, reply, layout)
                if keep:
                    del pending[reply.site_id]
                    yield reply  # one at a time, no reference kept: its slot frees with it
                    del reply
                else:  # asynchronous, still open
                    self.arrived.append(reply)
        except (EOFError, OSError):
            pass
        if self.why_dead(w) is None:
            return
        for got in sorted(c for c, t in self.submitted.items() if self.owner[t.site_id] == w):
            task = self.submitted.pop(got)
            msg = f"site {task.site_id!r}: {self.dead[w]} before it replied"
            self.arrived.append(Reply.failure(task, "worker-died", msg))
        for site in sorted(s for s in pending if self.owner[s] == w):
            task = pending.pop(site)
            yield Reply.failure(
                task, "worker-died", f"site {site!r}: {self.dead[w]} before it replied"
            )

    def collect_submitted(self, deadline: float | None) -> Iterator[Reply]:
        """Yield the replies to submitted (asynchronous) tasks as they arrive."""
        while True:
            if self.arrived:
                yield self.arrived.popleft()
                continue
            if not self.submitted:
                return
            busy = {self.owner[t.site_id] for t in self.submitted.values()}
            waits: list[Any] = [self.conns[w] for w in busy]
            waits += [self.procs[w].sentinel for w in busy]
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait(waits, timeout=left)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return
            for w in sorted(busy):
                if self.conns[w] in ready or self.procs[w].sentinel in ready:
                    for _ in self._read(w, -1, {}):  # fills self.arrived
                        pass

    def close(self) -> None:
        """Stop every worker (politely, then by force) and release the queues and pipes."""
        if self.closed:
            return
        self.closed = True
        for w, inbox in enumerate(self.inboxes):
            if self.procs[w].is_alive():
                inbox.put(None)
        end = time.monotonic() + JOIN_S  # one wait for all: they were all told at once
        for w, proc in enumerate(self.procs):
            while proc.is_alive() and time.monotonic() < end:
                try:
                    while self.conns[w].poll(0):
                        self.conns[w].recv()  # a stale reply the worker is blocked on sending
                        self.slots.seen(w)  # or one it waits on a slot after
                except (EOFError, OSError):
                    pass
                proc.join(0.05)
            if proc.is_alive():
                proc.terminate()
                proc.join(JOIN_S)
        for inbox in self.inboxes:
            # Tasks a stopped worker never read stay unsent: without this, the queue's feeder
            # thread, blocked on the full pipe of a worker that is gone, is waited for forever.
            inbox.cancel_join_thread()
            inbox.close()
        for conn in self.conns:
            conn.close()
        self.slots.close()  # after the workers stopped: none writes a slot any more


class ParallelGrid(OwnedSites, SubmittedTasks, Grid):
    """Sites in ``workers`` worker processes (see module docstring); use it in a ``with`` block.

    Parameters
    ----------
    sites:
        The sites' data; each worker is sent its sites' data once.
    workers:
        Worker processes (at most one per site).
    record:
        Keep every task and reply that crossed the grid in ``wire``.
    mods:
        Site middleware by site id; it must be picklable (module-level classes or functions),
        as it is sent to the workers.
    feature_names:
        The columns of the sites' data.
    site_reports:
        The folder under which each site writes its site-only reports (``<folder>/<site>``).

    Raises
    ------
    ConfigError
        For ``workers`` < 1, no sites, or mods that cannot be sent to a worker process.
    """

    def __init__(
        self,
        sites: Sequence[SiteData],
        *,
        workers: int,
        record: bool = False,
        mods: Mapping[str, Sequence[Mod]] | None = None,
        feature_names: Sequence[str] = (),
        site_reports: Path | None = None,
        _pool: _Pool | None = None,
    ) -> None:
        check_workers(workers)
        if not sites:
            raise ConfigError("a parallel grid needs at least one site")
        mods = dict(mods or {})
        try:
            pickle.dumps(mods)
        except Exception as err:
            raise ConfigError(
                f"mods for sites {sorted(mods)} cannot be sent to worker processes "
                f"(workers={workers}): {err}; run them with workers=1"
            ) from None
        self._own(sites)
        self._record = record
        self._owns = _pool is None
        self._pool = _pool or _Pool(sites, workers, mods, tuple(feature_names), site_reports)
        self.workers = len(self._pool.procs)
        #: Every task and reply that crossed the grid when ``record`` is set (tests read the wire).
        self.wire: list[Task | Reply] = []

    def subset(self, site_ids: Sequence[str]) -> ParallelGrid:
        """A grid over some of this grid's sites, in the same workers (their state included);
        closing it leaves the workers running."""
        view = self._view(site_ids)
        view._record, view._owns, view._pool = self._record, False, self._pool
        view.workers, view.wire = self.workers, []
        return view

    def send_and_receive(
        self,
        tasks: Sequence[Task],
        *,
        timeout: float | None = None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        if self._pool.closed:
            raise TransportError("this parallel grid is closed; its workers are gone")
        deadline = None if timeout is None else time.monotonic() + timeout
        call = next(self._pool.calls)
        pending: dict[str, Task] = {}
        refused: list[Reply] = []
        for task in list(tasks):
            if self._record:
                self.wire.append(task)
            if task.site_id not in self._sites:
                msg = f"no site {task.site_id!r} on this grid"
                refused.append(Reply.failure(task, "unknown-site", msg))
            elif (why := self._pool.why_dead(self._pool.owner[task.site_id])) is not None:
                msg = f"site {task.site_id!r}: {why}"
                refused.append(Reply.failure(task, "worker-died", msg))
            else:
                pending[task.site_id] = task
                self._pool.send(call, task)
        collected = self._pool.collect(call, pending, deadline, quorum)
        for reply in itertools.chain(refused, collected):
            if self._record:
                self.wire.append(reply)
            yield reply
            del reply

    @property
    def processes(self) -> tuple[Any, ...]:
        """The worker processes (``multiprocessing.Process``; dead once the grid is closed)."""
        return tuple(self._pool.procs)

    def close(self) -> None:
        """Stop the workers (a subset's view leaves them to the grid it came from)."""
        if self._owns:
            self._pool.close()

    def __enter__(self) -> ParallelGrid:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
