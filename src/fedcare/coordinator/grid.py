"""The coordinator-backed Grid: tasks become database rows, replies stream back as they land.

``send_and_receive`` stores each task's encoded payload content-addressed, inserts the task
rows, wakes the sites' long-polls, and yields each reply as soon as it is stored, until all
tasks are answered, failed or the deadline passes; tasks still open then are expired, so a late
reply is refused. With a :class:`~fedcare.grid.Quorum` the round closes earlier, once
``quorum.replies`` tasks were answered without an error and ``quorum.grace_s`` passed: its
open tasks are closed with it (``closed_at``), and a site's late reply is refused as
``round_closed`` and recorded, never stored as a reply of any round.

Task payloads are stored framed (:mod:`fedcare.transport.framed`: written
from views of the parameters, no serialized copy); tasks that carry the same parameters (a
round's, differing only in their headers) share one stored body, each a composite artifact of
its own header and that body under the digest of exactly the bytes its site receives
(:mod:`fedcare.coordinator.task_payloads`). Each reply is read from its mapped artifact, so
the round's memory is what aggregation keeps, not the replies. A site that
already answered the same task (the same payload digest) in an earlier attempt of the round,
before a coordinator restart or a retry, is not asked again: its reply is kept
(:data:`REUSABLE_KINDS`). Without a timeout the deadline is ``default_timeout`` (the study's
``task_deadline_s``; ``TASK_DEADLINE_FLOOR_S`` if not given): no task waits forever.

Once the study's reference feature schema is set (:meth:`CoordinatorGrid.set_reference`, at
round 0), a site whose described schema differs is refused for this study: it is left out of
:meth:`site_ids` (so it is sent no task of the study) and its reason is kept in ``refused``.

A site that refuses a task with one of :data:`~fedcare.coordinator.waiting.WITHDRAWAL_KINDS`
(its steward said no to the study) is left out of :meth:`site_ids` too, until a growing delay
passes or it says Hello again (:class:`~fedcare.coordinator.waiting.Withdrawals`);
:meth:`withdrawn` names those sites, ``on_withdrawn`` hears of each withdrawal.

Asynchronous rounds (FedBuff: ``submit``, ``arrivals``, ``open_tasks``, ``cancel_open``) are
:class:`~fedcare.coordinator.grid_async.SubmittedTasks`: several model versions open at once,
each task a row of its version's round, closed (late replies recorded) when cancelled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.grid_async import GridStopped, SubmittedTasks
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.rows import ReplyInfo, TaskInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.task_payloads import store_task_payloads
from fedcare.coordinator.waiting import WITHDRAWAL_BACKOFF, WITHDRAWAL_KINDS, Backoff, Withdrawals
from fedcare.data.schema_check import schema_differences, schema_of_description
from fedcare.grid import Grid, Quorum, Split
from fedcare.records.messages import Reply, ReplyError, Task
from fedcare.records.study import TASK_DEADLINE_FLOOR_S
from fedcare.transport.framed import read_reply

__all__ = ["CoordinatorGrid", "GridStopped"]


class CoordinatorGrid(SubmittedTasks, Grid):
    """The grid of one study on the coordinator."""

    def __init__(
        self,
        store: CoordinatorStore,
        artifacts: ArtifactStore,
        hub: Hub,
        study_id: str,
        dataset: str,
        *,
        liveness_s: float = 30.0,
        stop: threading.Event | None = None,
        default_timeout: float = TASK_DEADLINE_FLOOR_S,
        withdrawal_backoff: Backoff = WITHDRAWAL_BACKOFF,
    ) -> None:
        self.store, self.artifacts, self.hub = store, artifacts, hub
        self.study_id, self.dataset = study_id, dataset
        self.liveness_s = liveness_s
        #: The deadline of tasks sent without a timeout (the study's ``task_deadline_s``).
        self.default_timeout = default_timeout
        self.stop = stop or threading.Event()
        self.reference: dict[str, Any] | None = None
        #: Sites refused for this study (schema differs from the reference): site -> reason.
        self.refused: dict[str, str] = {}
        self.on_refused: Callable[[str, str], None] | None = None
        #: Sites that withdrew from the study, withheld from its tasks for a while.
        self.withdrawals = Withdrawals(withdrawal_backoff)
        #: Called with (site, error kind, not asked again before) after each withdrawal.
        self.on_withdrawn: Callable[[str, str, datetime], None] | None = None
        self._submitted = {}  # asynchronous rounds (grid_async.py): open tasks by site
        self._failed = []  # and error replies ready (tasks not sent, or lost)
        self.on_late = None  # replies stored after the study's last step (grid_async.py)

    def set_reference(self, schema: dict[str, Any]) -> None:
        """From now on, refuse every site whose feature schema differs from ``schema``."""
        self.reference = dict(schema)

    def site_ids(self) -> list[str]:
        """Active sites seen within ``liveness_s`` that offer the study's dataset, have not
        withdrawn from the study lately and (once the reference schema is set) agree with it."""
        now = datetime.now(timezone.utc)
        out = []
        for site in self.store.list_sites():
            seen = site.last_seen
            if seen is not None and seen.tzinfo is None:
                seen = seen.replace(tzinfo=timezone.utc)
            fresh = seen is not None and now - seen <= timedelta(seconds=self.liveness_s)
            described = (site.datasets or {}).get(self.dataset)
            usable = site.status == "active" and fresh and described is not None
            if usable and not self._withheld(site.id) and self._agrees(site.id, described):
                out.append(site.id)
        return sorted(out)

    def withdrawn(self) -> dict[str, str]:
        """The sites withheld now because they withdrew: site -> kind and until when."""
        return self.withdrawals.active(self.hub.hellos)

    def _withheld(self, site_id: str) -> bool:
        return self.withdrawals.withheld(site_id, self.hub.hellos(site_id))

    def _agrees(self, site_id: str, described: Any) -> bool:
        if self.reference is None:
            return True
        schema = schema_of_description(described if isinstance(described, dict) else {})
        differences = schema_differences(schema, self.reference)
        if not differences:
            self.refused.pop(site_id, None)
            return True
        reason = "feature schema differs from the study's: " + "; ".join(differences)
        if self.refused.get(site_id) != reason:
            self.refused[site_id] = reason
            if self.on_refused is not None:
                self.on_refused(site_id, reason)
        return False

    def dataset_descriptions(self) -> dict[str, dict[str, Any]]:
        return {
            s.id: dict((s.datasets or {}).get(self.dataset, {})) for s in self.store.list_sites()
        }

    def declared_rows(self, split: Split = "train") -> dict[str, int]:
        """``num_train``/``num_test`` each site declared for the study's dataset at Hello."""
        key = f"num_{split}"
        out: dict[str, int] = {}
        for site, described in self.dataset_descriptions().items():
            value = described.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out[site] = value
        return out

    def send_and_receive(
        self,
        tasks: Sequence[Task],
        *,
        timeout: float | None = None,
        quorum: Quorum | None = None,
    ) -> Iterator[Reply]:
        if not tasks:
            return
        round_ = tasks[0].round
        earlier = self.store.list_tasks(self.study_id, round_)
        attempt = max((t.attempt for t in earlier), default=0) + 1
        wait_s = self.default_timeout if timeout is None else timeout
        deadline = datetime.now(timezone.utc) + timedelta(seconds=wait_s)
        # not fsynced: a redone round writes the same bytes again (its checkpoint is durable)
        digests = store_task_payloads(self.artifacts, tasks, redo=bool(earlier))
        kept = _answered_before(earlier, self.store, tasks, digests)
        rows = [
            (t.site_id, t.kind, digest, deadline)
            for t, digest in zip(tasks, digests, strict=True)
            if t.site_id not in kept
        ]
        task_ids = self.store.create_tasks(self.study_id, round_, attempt, rows) if rows else []
        self.hub.notify()
        for row in kept.values():  # received before a restart or a retry: not asked again
            yield self._reply(row)
        answered = sum(1 for row in kept.values() if row.error_kind is None)
        end = time.monotonic() + wait_s
        yield from self._collect(set(task_ids), round_, attempt, end, quorum, answered)

    def _collect(
        self,
        pending: set[Any],
        round_: int,
        attempt: int,
        end: float,
        quorum: Quorum | None = None,
        answered: int = 0,
    ) -> Iterator[Reply]:
        grace_end = float("inf")
        try:
            while pending:
                if quorum is not None and answered >= quorum.replies and grace_end == float("inf"):
                    grace_end = time.monotonic() + quorum.grace_s
                generation = self.hub.generation()
                for row in self.store.replies_for_round(self.study_id, round_, attempt):
                    if row.task_id not in pending:
                        continue
                    pending.discard(row.task_id)
                    self._note_outcome(row)
                    answered += row.error_kind is None
                    yield self._reply(row)
                pending -= self._abandoned(pending)
                if quorum is not None and answered >= quorum.replies and grace_end == float("inf"):
                    grace_end = time.monotonic() + quorum.grace_s
                remaining = min(end, grace_end) - time.monotonic()
                if not pending or remaining <= 0:
                    break
                if self.stop.is_set():
                    raise GridStopped("the coordinator is stopping; the round will be redone")
                self.hub.wait(generation, remaining)
        finally:
            if pending:
                if time.monotonic() >= grace_end:  # closed early: late replies are recorded
                    self.store.close_round_tasks(self.study_id, round_, attempt)
                else:  # its deadline, or the coordinator stops: the round may be redone
                    self.store.expire_tasks(self.study_id, round_, attempt)
                self.hub.notify()

    def _note_outcome(self, row: ReplyInfo) -> None:
        if row.error_kind is None:
            self.withdrawals.answered(row.site_id)
        elif row.error_kind in WITHDRAWAL_KINDS:
            hello = self.hub.hellos(row.site_id)
            until = self.withdrawals.withdrew(row.site_id, row.error_kind, hello)
            if self.on_withdrawn is not None:
                self.on_withdrawn(row.site_id, row.error_kind, until)

    def _abandoned(self, pending: set[Any]) -> set[Any]:
        """Tasks whose site has gone silent (not seen for ``liveness_s``): stop waiting."""
        alive = set(self.site_ids())
        tasks = [self.store.get_task(task_id) for task_id in pending]
        return {t.id for t in tasks if t.site_id not in alive}

    def _reply(self, row: ReplyInfo) -> Reply:
        if row.error_kind is not None or row.payload_digest is None:
            return Reply(
                study_id=self.study_id,
                round=row.round,
                site_id=row.site_id,
                kind=row.kind,  # type: ignore[arg-type]
                error=ReplyError(row.error_kind or "error", row.error_message or ""),
            )
        # Mapped, not read: a reply that is only summed goes through the page cache once.
        return read_reply(self.artifacts.map(row.payload_digest))


#: Task kinds whose earlier answer to a byte-identical task is kept (a multi-stage protocol's
#: stages are not: a site's secrets for them belong to one attempt).
REUSABLE_KINDS = ("fit", "evaluate")


def _answered_before(
    earlier: Sequence[TaskInfo],
    store: CoordinatorStore,
    tasks: Sequence[Task],
    digests: Sequence[str],
) -> dict[str, ReplyInfo]:
    """The successful replies of an earlier attempt of this round to the same task.

    Task payloads are content-addressed, so the same digest is the same task, byte for byte
    (parameters, config, plan): a round redone after a coordinator restart, or retried after
    too few replies, keeps what each site already sent instead of asking it again.
    """
    wanted: dict[tuple[str, str, str | None], str] = {
        (t.site_id, str(t.kind), d): t.site_id
        for t, d in zip(tasks, digests, strict=True)
        if t.kind in REUSABLE_KINDS
    }
    answered = {
        task.id: wanted[(task.site_id, task.kind, task.payload_digest)]
        for task in earlier
        if task.status == "replied" and (task.site_id, task.kind, task.payload_digest) in wanted
    }
    kept: dict[str, ReplyInfo] = {}
    for attempt in sorted({t.attempt for t in earlier if t.id in answered}):
        first = earlier[0]
        for row in store.replies_for_round(first.study_id, first.round, attempt):
            if row.task_id in answered and row.error_kind is None and row.payload_digest:
                kept[answered[row.task_id]] = row
    return kept
