"""Tasks and replies: create a round's tasks, deliver each exactly once, accept valid replies.

Delivery: :meth:`TasksMixin.next_task_for` selects the site's oldest deliverable task and marks
it ``delivered`` in one transaction. On PostgreSQL the select is ``FOR UPDATE OF tasks SKIP
LOCKED`` (concurrent callers lock different rows; a row another caller already delivered no
longer matches when re-checked) and the update is conditional on the task still being pending.
On SQLite the transaction holds the database's write lock from its first statement, so
callers run one after another. Either way no task is handed out twice.

Replies: :meth:`TasksMixin.store_reply` checks everything before it writes, with the study
row and then the task row locked, and refuses with :class:`ReplyRefusedError` (``reason`` says
why) leaving the database unchanged. The unique ``replies.task_id`` backs this up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedcare.coordinator.artifacts import is_digest
from fedcare.coordinator.db import REPLY_ERROR_KINDS_MAX, ReplyRow, StudyRow, TaskRow
from fedcare.coordinator.rows import ReplyInfo, TaskInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_id, check_int
from fedcare.errors import ConflictError, NotFoundError, ReplyRefusedError, ValidationError
from fedcare.records.messages import ReplyError

__all__ = ["TaskSpec", "TasksMixin", "reply_info", "round_closed_why"]


Refuse = Callable[[str, str], ReplyRefusedError]


class TaskSpec(NamedTuple):
    """One task to create: for which site, what kind, its payload artifact and deadline, and
    its submission number (0; ``n`` for a task sent again: its key ends in ``#n``)."""

    site_id: str
    kind: str
    payload_digest: str | None
    deadline: datetime | None
    submission: int = 0


def round_closed_why(round: int, closed_at: datetime) -> str:
    """Why a reply to a task its round closed is refused (``round_closed``)."""
    return (
        f"round {round} closed at {closed_at.isoformat()} (its quorum of sites replied and its "
        "grace period passed, or its asynchronous study stopped waiting for the task); the task "
        "expired then, so this late reply is recorded but taken into no round"
    )


def reply_info(row: ReplyRow, task: TaskRow) -> ReplyInfo:
    """The :class:`ReplyInfo` of ``row``, a reply to ``task``."""
    return snapshot(
        ReplyInfo,
        row,
        study_id=task.study_id,
        round=task.round,
        attempt=task.attempt,
        kind=task.kind,
    )


class TasksMixin(StoreBase):
    """Create, deliver, answer and expire tasks."""

    def create_tasks(
        self,
        study_id: str,
        round: int,
        attempt: int,
        specs: Sequence[TaskSpec | tuple[str, str, str | None, datetime | None]],
    ) -> list[str]:
        """Create one ``pending`` task per spec; return their ids in the same order.

        Parameters
        ----------
        study_id:
            A ``running`` study.
        round, attempt:
            Round number and attempt within the round (both >= 0).
        specs:
            ``(site_id, kind, payload_digest, deadline)`` per task: an active site, a kind
            (``fit``, ``evaluate``, a protocol stage...), the digest of a stored payload artifact
            or None, and a timezone-aware deadline or None.

        Raises
        ------
        NotFoundError
            If the study, a site or a payload artifact does not exist.
        ConflictError
            If the study is not running or a site is not active; no task is created.
        ValidationError
            If an argument is malformed (names it).
        """
        check_int(round, "round")
        check_int(attempt, "attempt")
        checked = [self._check_spec(TaskSpec(*spec), i) for i, spec in enumerate(specs)]
        now = self._now()
        rows = [
            TaskRow(
                id=uuid.uuid4().hex,
                study_id=study_id,
                round=round,
                attempt=attempt,
                site_id=spec.site_id,
                kind=spec.kind,
                status="pending",
                payload_digest=spec.payload_digest,
                created_at=now,
                delivered_at=None,
                deadline=spec.deadline,
                submission=spec.submission,
            )
            for spec in checked
        ]
        with self._tx(write=True) as s:
            self._running_study(s, study_id, f"create tasks for round {round}", "share")
            for spec in checked:
                site = self._site(s, spec.site_id)
                if site.status != "active":
                    raise ConflictError(
                        f"cannot create a {spec.kind!r} task for site {spec.site_id!r}: "
                        f"the site is {site.status!r}"
                    )
            s.add_all(rows)
        return [r.id for r in rows]

    def _check_spec(self, spec: TaskSpec, i: int) -> TaskSpec:
        check_id(spec.site_id, f"specs[{i}].site_id")
        check_id(spec.kind, f"specs[{i}].kind", max_len=32)
        check_int(spec.submission, f"specs[{i}].submission")
        if spec.payload_digest is not None:
            if not is_digest(spec.payload_digest):
                raise ValidationError(
                    f"specs[{i}].payload_digest must be a SHA-256 hex digest or None, "
                    f"got {spec.payload_digest!r}"
                )
            if not self.artifacts.exists(spec.payload_digest):
                raise NotFoundError(
                    f"specs[{i}]: payload artifact {spec.payload_digest} is not stored"
                )
        if spec.deadline is not None and (
            not isinstance(spec.deadline, datetime) or spec.deadline.tzinfo is None
        ):
            raise ValidationError(
                f"specs[{i}].deadline must be a timezone-aware datetime or None, "
                f"got {spec.deadline!r}"
            )
        return spec

    def next_task_for(self, site_id: str) -> TaskInfo | None:
        """Hand the site its oldest deliverable task, marked ``delivered``; None if none.

        A task is deliverable while it is pending, its study is running and its deadline (if
        any) has not passed. Each task is handed out at most once, even to concurrent callers.

        Raises
        ------
        NotFoundError
            If the site is not registered.
        ConflictError
            If the site is not active.
        """
        now = self._now()
        stmt = (
            select(TaskRow)
            .join(StudyRow, StudyRow.id == TaskRow.study_id)
            .where(
                TaskRow.site_id == site_id,
                TaskRow.status == "pending",
                StudyRow.status == "running",
                or_(TaskRow.deadline.is_(None), TaskRow.deadline > now),
            )
            .order_by(TaskRow.created_at, TaskRow.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=TaskRow)
        )
        with self._tx(write=True) as s:
            site = self._site(s, site_id)
            if site.status != "active":
                raise ConflictError(f"site {site_id!r} is {site.status!r}; it gets no tasks")
            row = s.scalars(stmt).one_or_none()
            if row is None:
                return None
            claimed = s.execute(
                update(TaskRow)
                .where(TaskRow.id == row.id, TaskRow.status == "pending")
                .values(status="delivered", delivered_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]  # never with the locks above
                raise ConflictError(f"task {row.id!r} was delivered by a concurrent call")
        return snapshot(TaskInfo, row, status="delivered", delivered_at=now)

    def get_task(self, task_id: str) -> TaskInfo:
        """The task ``task_id``; NotFoundError if there is none."""
        with self._tx(write=False) as s:
            row = s.get(TaskRow, task_id)
            if row is None:
                raise NotFoundError(f"no task with id {task_id!r}")
            return snapshot(TaskInfo, row)

    def list_tasks(
        self, study_id: str, round: int | None = None, attempt: int | None = None
    ) -> list[TaskInfo]:
        """The study's tasks (optionally of one round and attempt), oldest first."""
        stmt = select(TaskRow).where(TaskRow.study_id == study_id)
        if round is not None:
            stmt = stmt.where(TaskRow.round == round)
        if attempt is not None:
            stmt = stmt.where(TaskRow.attempt == attempt)
        with self._tx(write=False) as s:
            rows = s.scalars(stmt.order_by(TaskRow.created_at, TaskRow.id))
            return [snapshot(TaskInfo, r) for r in rows]

    def store_reply(
        self,
        task_id: str,
        site_id: str,
        *,
        payload_digest: str | None = None,
        error: ReplyError | None = None,
        num_samples: int = 0,
    ) -> ReplyInfo:
        """Accept ``site_id``'s reply to ``task_id``: a payload artifact, or an error.

        A payload reply marks the task ``replied``, an error reply marks it ``failed``.

        Raises
        ------
        ValidationError
            If both or neither of ``payload_digest`` and ``error`` are given, or an argument is
            malformed.
        ReplyRefusedError
            With ``reason``, checked in this order: ``unknown_task``; ``wrong_site`` (the task
            belongs to another site); ``site_inactive``; ``round_closed`` (expired when its
            round closed early, or its asynchronous study cancelled it; also once the study
            ended); ``study_not_running``; ``already_answered``;
            ``expired`` (expired, or its deadline passed);
            ``not_delivered``; ``payload_missing`` (no artifact under ``payload_digest``).
            The database is unchanged.
        """
        self._check_reply_args(payload_digest, error, num_samples)

        def refuse(reason: str, why: str) -> ReplyRefusedError:
            message = f"reply from site {site_id!r} to task {task_id!r} refused ({reason}): {why}"
            return ReplyRefusedError(message, reason=reason, task_id=task_id, site_id=site_id)

        now = self._now()
        try:
            with self._tx(write=True) as s:
                task = self._locked_task(s, task_id, site_id, now, refuse)
                if payload_digest is not None and not self.artifacts.exists(payload_digest):
                    raise refuse("payload_missing", f"no artifact {payload_digest} is stored")
                row = ReplyRow(
                    task_id=task_id,
                    site_id=site_id,
                    received_at=now,
                    payload_digest=payload_digest,
                    num_samples=num_samples,
                    error_kind=None if error is None else error.kind,
                    error_message=None if error is None else error.message,
                )
                s.add(row)
                task.status = "replied" if error is None else "failed"
                s.flush()
        except IntegrityError as err:  # a concurrent reply to the same task won
            raise refuse("already_answered", "the task already has a reply") from err
        return reply_info(row, task)

    def replies_for_round(
        self, study_id: str, round: int, attempt: int, *, kind: str | None = None
    ) -> list[ReplyInfo]:
        """Replies to the tasks of one attempt of one round (optionally of one kind), by arrival."""
        stmt = (
            select(ReplyRow, TaskRow)
            .join(TaskRow, TaskRow.id == ReplyRow.task_id)
            .where(TaskRow.study_id == study_id, TaskRow.round == round)
            .where(TaskRow.attempt == attempt)
            .order_by(ReplyRow.received_at, ReplyRow.id)
        )
        if kind is not None:
            stmt = stmt.where(TaskRow.kind == kind)
        with self._tx(write=False) as s:
            return [reply_info(row, task) for row, task in s.execute(stmt).all()]

    def task_replies(self, task_ids: Collection[str]) -> list[tuple[TaskInfo, ReplyInfo | None]]:
        """Each of the tasks ``task_ids`` (those that exist) with its reply, ``None`` while it
        has none: the answered ones first, by arrival, then the others."""
        stmt = (
            select(TaskRow, ReplyRow)
            .outerjoin(ReplyRow, ReplyRow.task_id == TaskRow.id)
            .where(TaskRow.id.in_(list(task_ids)))
        )
        with self._tx(write=False) as s:
            rows = [
                (snapshot(TaskInfo, task), None if row is None else reply_info(row, task))
                for task, row in s.execute(stmt).all()
            ]

        def order(pair: tuple[TaskInfo, ReplyInfo | None]) -> tuple[bool, Any, str]:
            reply = pair[1]
            return (reply is None, None if reply is None else reply.received_at, pair[0].id)

        return sorted(rows, key=order)

    def site_outcomes(self, study_id: str, round: int) -> dict[str, str]:
        """Each site's outcome in the last attempt of ``round``: the error kind of its reply,
        ``"ok"``, or ``"no-reply"`` (``{}`` when the round sent no task)."""
        tasks = self.list_tasks(study_id, round)
        if not tasks:
            return {}
        attempt = max(t.attempt for t in tasks)
        out = {t.site_id: "no-reply" for t in tasks if t.attempt == attempt}
        for reply in self.replies_for_round(study_id, round, attempt):
            out[reply.site_id] = reply.error_kind or "ok"
        return out

    def expire_tasks(self, study_id: str, round: int, attempt: int | None = None) -> int:
        """Mark the open (pending or delivered) tasks of one attempt of one round (``None``:
        of every attempt) expired.

        Later replies to them are refused (``expired``). Returns how many tasks expired.
        """
        which = [] if attempt is None else [TaskRow.attempt == attempt]
        with self._tx(write=True) as s:
            self._study(s, study_id, "update")
            return self._expire_where(
                s, TaskRow.study_id == study_id, TaskRow.round == round, *which
            )

    @staticmethod
    def _check_reply_args(
        payload_digest: str | None, error: ReplyError | None, num_samples: int
    ) -> None:
        if (payload_digest is None) == (error is None):
            raise ValidationError("a reply carries exactly one of payload_digest and error")
        if payload_digest is not None and not is_digest(payload_digest):
            raise ValidationError(
                f"payload_digest must be a SHA-256 hex digest, got {payload_digest!r}"
            )
        if error is not None:
            if not isinstance(error, ReplyError):
                raise ValidationError(f"error must be a ReplyError, got {error!r}")
            check_id(error.kind, "error.kind", max_len=REPLY_ERROR_KINDS_MAX)
            if not isinstance(error.message, str):
                raise ValidationError(f"error.message must be a string, got {error.message!r}")
        check_int(num_samples, "num_samples")

    def _locked_task(
        self, s: Session, task_id: str, site_id: str, now: datetime, refuse: Refuse
    ) -> TaskRow:
        """The task to answer, its study locked first and then itself; refuse if it can't be."""
        peek = s.get(TaskRow, task_id)  # unlocked, to learn the study: locks go study first
        if peek is None:
            raise refuse("unknown_task", "there is no such task")
        if peek.site_id != site_id:
            raise refuse("wrong_site", "the task was sent to another site")
        site = self._site(s, site_id)
        if site.status != "active":
            raise refuse("site_inactive", f"the site is {site.status!r}")
        if peek.status == "expired" and peek.closed_at is not None:  # final: no lock needed
            raise refuse("round_closed", round_closed_why(peek.round, peek.closed_at))
        study = self._study(s, peek.study_id, "share")
        if study.status != "running":
            raise refuse("study_not_running", f"study {study.id!r} is {study.status!r}")
        task = s.scalars(
            select(TaskRow)
            .where(TaskRow.id == task_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if task.status in ("replied", "failed"):
            raise refuse("already_answered", f"the task is already {task.status!r}")
        if task.status == "expired" and task.closed_at is not None:  # closed meanwhile
            raise refuse("round_closed", round_closed_why(task.round, task.closed_at))
        if task.status == "expired" or (task.deadline is not None and task.deadline <= now):
            raise refuse("expired", f"the task expired (deadline {task.deadline})")
        if task.status == "pending":
            raise refuse("not_delivered", "the task was never delivered to the site")
        return task
