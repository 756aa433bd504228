"""Asynchronous rounds on the coordinator's grid (FedBuff): ``submit``, ``arrivals``,
``open_tasks`` and ``cancel_open`` of :class:`fedcare.grid.Grid`.

A submitted task is a task row of round = the model version it carries, in an attempt of its
own. A site may be sent the same version again (its earlier task answered, or closed): that
task is a new attempt of the round and carries a submission number (its attempt), so its
site-facing key is ``study/round/kind/site#n`` (:func:`fedcare.records.messages.task_key`)
and names it alone: a late reply to the earlier task names that one, is refused (closed, or
already answered) and never answers the new one. Its payload is stored as
``send_and_receive`` stores a round's, its deadline is the study's ``task_deadline_s``.
Several versions are open at once, at most one task per site.

:meth:`SubmittedTasks.arrivals` polls the open tasks' replies by task id
(:meth:`~fedcare.coordinator.store_tasks.TasksMixin.task_replies`), woken by the hub when a
reply lands, and yields each once, naming the task it answers (:attr:`Reply.task_id`). A task
that will not be answered yields an error reply of kind ``no-reply`` saying why, and is closed
(``closed_at``): its site went silent (not seen within ``liveness_s``, as the synchronous grid
abandons it), its deadline passed, or it was expired by someone else (the study stopped, the
site was revoked). A task for a site not available when it is submitted (not seen lately,
withdrawn, refused) is not sent: its error reply comes from :meth:`SubmittedTasks.arrivals` at
once. :meth:`cancel_open` closes the open tasks the same way. A reply that comes for a closed
task is refused as ``round_closed`` and recorded (``late_at``, a ``late-reply`` audit entry):
never buffered. A reply stored in the moment between the last step and :meth:`cancel_open` (it
landed while the final evaluation ran) is recorded as late the same way: its task closed with
``late_at`` (when it was stored), a ``late-reply`` audit entry (:attr:`SubmittedTasks.on_late`),
the reply kept but taken into no step. When the coordinator is stopping instead (the study goes
on after a restart), such a reply is left as it is, to be taken then.

:meth:`SubmittedTasks.unstepped` reads, when a run starts, the replies that an earlier run
received but took into no step (it was cut by a restart: updates buffered, or stored and not
yet taken): the study's answered submitted tasks, not closed, whose key no persisted step's
record names (each contribution names the reply it took). The driver buffers them again, in
arrival order, instead of asking their sites again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.rows import ReplyInfo, TaskInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_liveness import task_key
from fedcare.coordinator.store_tasks import TaskSpec
from fedcare.coordinator.task_payloads import store_task_payloads
from fedcare.coordinator.waiting import NO_REPLY
from fedcare.errors import ConfigError, TransportError
from fedcare.records.messages import Reply, Task

__all__ = ["GridStopped", "SubmittedTasks"]


class GridStopped(TransportError):
    """The coordinator is shutting down while a round collects replies."""


@dataclass(frozen=True)
class _Open:
    """A submitted task not yet answered: the task, its row's id, when it must be answered."""

    task: Task
    row_id: str
    deadline: float  # time.monotonic()


class SubmittedTasks:
    """The asynchronous half of :class:`~fedcare.coordinator.grid.CoordinatorGrid` (a mixin:
    it uses the grid's store, artifacts, hub, deadline and liveness)."""

    store: CoordinatorStore
    artifacts: ArtifactStore
    hub: Hub
    study_id: str
    default_timeout: float
    stop: threading.Event
    site_ids: Callable[[], list[str]]
    _note_outcome: Callable[[ReplyInfo], None]
    _reply: Callable[[ReplyInfo], Reply]
    #: The open submitted tasks by site (the grid starts it empty).
    _submitted: dict[str, _Open]
    #: Error replies ready to be taken: tasks not sent (their site was not available) or lost.
    _failed: list[Reply]
    #: Called with each task whose reply was stored but will be taken into no step (the study
    #: ended first), once it is recorded as late (the runner writes a ``late-reply`` entry).
    on_late: Callable[[TaskInfo], None] | None

    def submit(self, tasks: Sequence[Task]) -> None:
        busy = set(self._submitted)
        for task in tasks:
            if task.site_id in busy:
                raise ConfigError(f"site {task.site_id!r} already has an open submitted task")
            busy.add(task.site_id)
        alive = set(self.site_ids())
        for task in tasks:  # one attempt each: see the module docstring
            if task.site_id not in alive:  # revoked, silent, withdrawn or refused: not sent
                why = f"site {task.site_id!r} is not available (not seen lately, or left the study)"
                self._failed.append(Reply.failure(task, NO_REPLY, f"version {task.round}: {why}"))
                continue
            earlier = self.store.list_tasks(self.study_id, task.round)
            attempt = max((t.attempt for t in earlier), default=0) + 1
            again = any(t.site_id == task.site_id and t.kind == task.kind for t in earlier)
            task = replace(task, submission=attempt if again else 0)  # its key: see above
            [digest] = store_task_payloads(self.artifacts, [task], redo=bool(earlier))
            deadline = datetime.now(timezone.utc) + timedelta(seconds=self.default_timeout)
            spec = TaskSpec(task.site_id, task.kind, digest, deadline, task.submission)
            [row_id] = self.store.create_tasks(self.study_id, task.round, attempt, [spec])
            end = time.monotonic() + self.default_timeout
            self._submitted[task.site_id] = _Open(task, row_id, end)
        self.hub.notify()  # the sites' long-polls take them now

    def arrivals(
        self, *, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Reply]:
        """Replies to open submitted tasks as they land, each once (see the module docstring)."""
        end = float("inf") if timeout is None else time.monotonic() + timeout
        count = 0
        while (self._submitted or self._failed) and (limit is None or count < limit):
            generation = self.hub.generation()
            for reply in self._landed():
                yield reply
                count += 1
                if limit is not None and count >= limit:
                    return
            if not self._submitted:
                return
            first = min(o.deadline for o in self._submitted.values())
            remaining = min(end, first) - time.monotonic()
            if time.monotonic() >= end:
                return
            if self.stop.is_set():
                raise GridStopped("the coordinator is stopping; the study resumes on restart")
            self.hub.wait(generation, max(remaining, 0.0))

    def _landed(self) -> Iterator[Reply]:
        """The replies (or ``no-reply`` errors) of the open tasks that are answered or lost."""
        while self._failed:
            yield self._failed.pop(0)
        by_row = {o.row_id: o for o in self._submitted.values()}
        lost: dict[str, str] = {}
        alive = set(self.site_ids())
        now = time.monotonic()
        for info, row in self.store.task_replies(by_row):
            opened = by_row[info.id]
            if row is not None:
                del self._submitted[info.site_id]
                self._note_outcome(row)
                yield self._reply(row).answering(opened.task)  # names the task it answers
            elif info.status not in ("pending", "delivered"):
                lost[info.id] = f"the task was {info.status} (the study stopped or the site left)"
            elif info.site_id not in alive:
                lost[info.id] = f"site {info.site_id!r} went silent (or left the study)"
            elif now >= opened.deadline:
                lost[info.id] = f"no reply within the task deadline ({self.default_timeout:g} s)"
        if lost:
            self.store.close_tasks(self.study_id, list(lost))  # a late reply is recorded
            self.hub.notify()
        for row_id, why in lost.items():  # no longer open, whenever the caller stops taking
            task = by_row[row_id].task
            del self._submitted[task.site_id]
            self._failed.append(Reply.failure(task, NO_REPLY, f"version {task.round}: {why}"))
        while self._failed:
            yield self._failed.pop(0)

    def open_tasks(self) -> list[Task]:
        return [self._submitted[s].task for s in sorted(self._submitted)]

    def cancel_open(self) -> list[Task]:
        """Close the open submitted tasks (``closed_at``): their late replies are refused as
        ``round_closed`` and recorded, never yielded. A reply stored since :meth:`arrivals`
        last looked (after the last step, during the final evaluation) is recorded as late
        the same way (``late_at``, :attr:`on_late`): kept, never yielded."""
        closed = self.open_tasks()
        self._failed.clear()
        if closed:
            rows = [o.row_id for o in self._submitted.values()]
            self._submitted.clear()
            self.store.close_tasks(self.study_id, rows)  # a reply from now on is refused
            late = []  # stored before: late, unless the coordinator stops (taken on resume)
            if not self.stop.is_set():
                late = self.store.close_answered_as_late(self.study_id, rows)
            self.hub.notify()
            for info in late:
                if self.on_late is not None:
                    self.on_late(info)
        return closed

    def unstepped(self) -> list[Reply]:
        """The replies to this study's submitted tasks that no persisted step took (a step's
        record names each reply it took: its contributions' ``task``), still open (neither
        late nor cancelled), by arrival; read once when a run starts (see the module
        docstring). A step record without those names (written before they were) means that
        only replies received after it are returned."""
        used: set[str] = set()
        since = None
        for info in self.store.list_rounds(self.study_id, min_round=1):
            contributions = (info.record.get("fit") or {}).get("contributions") or []
            keys = [c.get("task") for c in contributions if isinstance(c, dict)]
            used.update(k for k in keys if isinstance(k, str))
            if not keys or not all(isinstance(k, str) for k in keys):
                since = info.completed_at
        out = []
        for task, row in self.store.open_answers(self.study_id):
            if task_key(task) not in used and (since is None or row.received_at > since):
                out.append(replace(self._reply(row), submission=task.submission))
        return out

    def close_earlier_submissions(self) -> int:
        """Close every task of the study still open in the database (an earlier run's, cut by
        a coordinator restart): an asynchronous study resumes from its last persisted version
        with fresh tasks, and their late replies are recorded, never buffered."""
        self._submitted.clear()
        return self.store.close_tasks(self.study_id)
