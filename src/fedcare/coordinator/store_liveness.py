"""Keeping delivered tasks alive or closing them: the task a reply names, failing tasks.

A delivered task that is never answered would stall its round until the deadline. Three
operations close that gap:

- :meth:`LivenessMixin.task_for_reply` resolves the task a PushReply names (by its key
  ``study/round/kind/site``, ``#n`` after it for a task sent again with the same round and
  kind: submission ``n``, before any payload is read) and checks it can still be answered;
  a round redone after a coordinator restart sends the same (content-addressed) task again,
  and a site still holding it from the earlier attempt answers the new one (it is delivered
  then), so an upload cut by the restart resumes instead of being computed again;
- :meth:`LivenessMixin.fail_task` closes a delivered task with a stored error reply (a refused,
  invalid reply), so the round counts it as failed at once with the reason;
- :meth:`LivenessMixin.fail_unheld_tasks` closes the delivered tasks a site no longer holds
  (it said Hello again, listing what it holds: it restarted, or lost a download).

A deadline-bound round closes once its quorum replied and its grace period passed
(:class:`~fedcare.grid.Quorum`): :meth:`LivenessMixin.close_round_tasks` expires its open
tasks with ``closed_at``, a reply to one is refused as ``round_closed``, and
:meth:`LivenessMixin.note_late_reply` records when the late reply came (``late_at``) without
storing it as a reply of any round. An asynchronous study (FedBuff) closes the tasks it no
longer waits for the same way (:meth:`LivenessMixin.close_tasks`); a reply that was stored
after its last step but before those tasks were closed is recorded as late the same way
(:meth:`LivenessMixin.close_answered_as_late`), its reply kept but taken into no round.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from fedcare.coordinator.db import REPLY_ERROR_KINDS_MAX, ReplyRow, StudyRow, TaskRow
from fedcare.coordinator.rows import ReplyInfo, TaskInfo, snapshot
from fedcare.coordinator.store_tasks import TasksMixin, reply_info, round_closed_why
from fedcare.errors import NotFoundError, ReplyRefusedError
from fedcare.records.messages import ReplyError, split_task_key
from fedcare.records.messages import task_key as format_key

__all__ = ["LivenessMixin", "split_task_key", "task_key"]


def task_key(info: TaskInfo) -> str:
    """The site-facing id of a task: ``study/round/kind/site``, ``#n`` after it for a task of
    submission ``n`` (``Task.task_id``)."""
    return format_key(info.study_id, info.round, info.kind, info.site_id, info.submission)


def _named_by(study_id: str, round_: int, kind: str, site_id: str, submission: int) -> Select[Any]:
    """The task a key names: that submission's (``#n``), else the newest attempt of the
    round's tasks of submission 0 (a redone synchronous round's newest)."""
    return (
        select(TaskRow)
        .where(TaskRow.study_id == study_id, TaskRow.round == round_)
        .where(TaskRow.kind == kind, TaskRow.site_id == site_id)
        .where(TaskRow.submission == submission)
        .order_by(TaskRow.attempt.desc())
        .limit(1)
    )


class LivenessMixin(TasksMixin):
    """Resolve the task a reply names; fail tasks that will never be answered."""

    def task_for_reply(self, key: str, site_id: str) -> TaskInfo:
        """The open, delivered task ``key`` names, to be answered by ``site_id``.

        A key with ``#n`` names the task of submission ``n`` (sent again with the same round
        and kind: an asynchronous study's); one without names the newest attempt of the round
        among the tasks of submission 0 (a redone round's). Nothing is written, unless
        that attempt's task is still pending but an earlier attempt delivered the same task
        (same payload digest) to the site: then it is marked delivered, and answered by this
        reply.

        Raises
        ------
        ReplyRefusedError
            With ``reason``: ``unknown_task`` (a malformed key, or no such task);
            ``wrong_site``; ``site_inactive``; ``round_closed`` (also when its study has
            ended since: the late reply is recorded); ``study_not_running``;
            ``already_answered``; ``expired``; ``not_delivered`` (as :meth:`store_reply`
            checks them).
        """

        def refuse(reason: str, why: str) -> ReplyRefusedError:
            message = f"reply from site {site_id!r} to task {key!r} refused ({reason}): {why}"
            return ReplyRefusedError(message, reason=reason, task_id=key, site_id=site_id)

        parts = split_task_key(key)
        if parts is None:
            raise refuse("unknown_task", "the task id is not 'study/round/kind/site[#n]'")
        study_id, round_, kind, owner, submission = parts
        if owner != site_id:
            raise refuse("wrong_site", f"site {site_id!r} cannot reply for site {owner!r}")
        stmt = _named_by(study_id, round_, kind, site_id, submission)
        now = self._now()
        with self._tx(write=False) as s:
            row = s.scalars(stmt).one_or_none()
            if row is None:
                raise refuse("unknown_task", f"no {kind} task of round {round_} was sent")
            site = self._site(s, site_id)
            if site.status != "active":
                raise refuse("site_inactive", f"the site is {site.status!r}")
            if row.status == "expired" and row.closed_at is not None:  # also once it ended
                raise refuse("round_closed", round_closed_why(row.round, row.closed_at))
            study = s.get(StudyRow, study_id)
            if study is None or study.status != "running":
                status = "gone" if study is None else study.status
                raise refuse("study_not_running", f"study {study_id!r} is {status!r}")
            if row.status in ("replied", "failed"):
                raise refuse("already_answered", f"the task is already {row.status!r}")
            deadline = row.deadline
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=now.tzinfo)
            if row.status == "expired" or (deadline is not None and deadline <= now):
                raise refuse("expired", f"the task expired (deadline {row.deadline})")
            if row.status == "pending" and not _held_before(s, row):
                raise refuse("not_delivered", "the task was never delivered to the site")
            if row.status != "pending":
                return snapshot(TaskInfo, row)
        # The round was redone (a coordinator restart, a retry) with the very task the site
        # already holds from an earlier attempt: its answer answers this one; deliver it now.
        with self._tx(write=True) as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == row.id, TaskRow.status == "pending")
                .values(status="delivered", delivered_at=now)
                .execution_options(synchronize_session=False)
            )
        return self.get_task(row.id)

    def close_round_tasks(self, study_id: str, round: int, attempt: int) -> int:
        """Expire the open tasks of one attempt of one round because the round closed (its
        quorum replied and its grace period passed), noting when (``closed_at``): a reply
        that comes later is refused as ``round_closed`` and recorded
        (:meth:`note_late_reply`). Returns how many tasks were closed."""
        now = self._now()
        with self._tx(write=True) as s:
            self._study(s, study_id, "update")
            return self._expire_where(
                s,
                TaskRow.study_id == study_id,
                TaskRow.round == round,
                TaskRow.attempt == attempt,
                closed_at=now,
            )

    def close_tasks(self, study_id: str, task_ids: Collection[str] | None = None) -> int:
        """Expire the study's open tasks ``task_ids`` (``None``: all of them) because it no
        longer waits for them (an asynchronous study cancelled them), noting when
        (``closed_at``): a reply that comes later is refused as ``round_closed`` and recorded
        (:meth:`note_late_reply`). Returns how many tasks were closed."""
        now = self._now()
        which = [] if task_ids is None else [TaskRow.id.in_(list(task_ids))]
        with self._tx(write=True) as s:
            self._study(s, study_id, "update")
            return self._expire_where(s, TaskRow.study_id == study_id, *which, closed_at=now)

    def close_answered_as_late(self, study_id: str, task_ids: Collection[str]) -> list[TaskInfo]:
        """Close the answered tasks among ``task_ids`` that the study will never take (their
        reply landed after it stopped taking them: its last step was done): each is expired
        with ``closed_at`` now and ``late_at`` when its reply was stored, as a late reply to a
        closed task is recorded. The stored reply is kept, taken into no round. Returns the
        tasks closed so (each once: a task already closed is left alone)."""
        now = self._now()
        stmt = (
            select(TaskRow, ReplyRow.received_at)
            .join(ReplyRow, ReplyRow.task_id == TaskRow.id)
            .where(TaskRow.study_id == study_id, TaskRow.id.in_(list(task_ids)))
            .where(TaskRow.status.in_(("replied", "failed")), TaskRow.closed_at.is_(None))
            .order_by(ReplyRow.received_at, TaskRow.id)
            .with_for_update(of=TaskRow)
        )
        with self._tx(write=True) as s:
            self._study(s, study_id, "update")
            closed = []
            for row, received_at in s.execute(stmt).all():
                row.status, row.closed_at, row.late_at = "expired", now, received_at
                closed.append(row)
            s.flush()
            return [snapshot(TaskInfo, r) for r in closed]

    def open_answers(self, study_id: str, kind: str = "fit") -> list[tuple[TaskInfo, ReplyInfo]]:
        """The study's tasks of ``kind`` answered with a payload and not closed since (neither
        late nor cancelled), each with its reply, by arrival: what an asynchronous study may
        still take into a step after a restart."""
        stmt = (
            select(TaskRow, ReplyRow)
            .join(ReplyRow, ReplyRow.task_id == TaskRow.id)
            .where(TaskRow.study_id == study_id, TaskRow.kind == kind)
            .where(TaskRow.status == "replied", TaskRow.closed_at.is_(None))
            .where(ReplyRow.error_kind.is_(None), ReplyRow.payload_digest.is_not(None))
            .order_by(ReplyRow.received_at, ReplyRow.id)
        )
        with self._tx(write=False) as s:
            return [
                (snapshot(TaskInfo, task), reply_info(row, task))
                for task, row in s.execute(stmt).all()
            ]

    def note_late_reply(self, key: str, site_id: str) -> TaskInfo | None:
        """Record that ``site_id`` tried to reply to task ``key`` after its round closed.

        The reply is not stored (it answers no open task of any round); the task's
        ``late_at`` says when it first came. Returns the task when this is the first late
        reply to it, ``None`` otherwise (already noted, not closed with its round, not the
        site's task).
        """
        parts = split_task_key(key)
        if parts is None or parts[3] != site_id:
            return None
        now = self._now()
        with self._tx(write=True) as s:
            row = s.scalars(_named_by(*parts).with_for_update()).one_or_none()
            if row is None or row.closed_at is None or row.late_at is not None:
                return None
            row.late_at = now
            s.flush()
            return snapshot(TaskInfo, row)

    def fail_task(self, task_id: str, site_id: str, kind: str, message: str) -> bool:
        """Close ``site_id``'s delivered task ``task_id`` with an error reply ``kind: message``.

        Returns False (and changes nothing) if the task cannot be answered any more (already
        answered, expired, its study stopped): it is closed already.
        """
        error = ReplyError(kind[:REPLY_ERROR_KINDS_MAX], message[:2000])
        try:
            self.store_reply(task_id, site_id, error=error)
        except (ReplyRefusedError, NotFoundError):
            return False
        return True

    def fail_unheld_tasks(
        self, site_id: str, held: Collection[str], *, kind: str = "site_restarted"
    ) -> list[TaskInfo]:
        """Fail ``site_id``'s delivered tasks of running studies whose key is not in ``held``.

        Called when the site says Hello: it lists the tasks it still holds (running, or with a
        reply not yet acknowledged); any other task delivered to it will never be answered.
        Returns the tasks failed.
        """
        stmt = (
            select(TaskRow)
            .join(StudyRow, StudyRow.id == TaskRow.study_id)
            .where(TaskRow.site_id == site_id, TaskRow.status == "delivered")
            .where(StudyRow.status == "running")
        )
        with self._tx(write=False) as s:
            delivered = [snapshot(TaskInfo, r) for r in s.scalars(stmt)]
        held_keys = set(held)
        failed = []
        for info in delivered:
            if task_key(info) in held_keys:
                continue
            why = (
                f"site {site_id!r} said Hello without holding task {task_key(info)!r} "
                f"(attempt {info.attempt}): it restarted or lost the task, which will never "
                "be answered"
            )
            if self.fail_task(info.id, site_id, kind, why):
                failed.append(info)
        return failed


def _held_before(s: Session, row: TaskRow) -> bool:
    """Whether an earlier attempt of ``row``'s round delivered the same task (the same
    payload, content-addressed) to the same site, which may hold it still."""
    if row.payload_digest is None:
        return False
    earlier = s.scalars(
        select(TaskRow.id)
        .where(TaskRow.study_id == row.study_id, TaskRow.round == row.round)
        .where(TaskRow.kind == row.kind, TaskRow.site_id == row.site_id)
        .where(TaskRow.attempt < row.attempt, TaskRow.payload_digest == row.payload_digest)
        .where(TaskRow.delivered_at.is_not(None))
        .limit(1)
    ).first()
    return earlier is not None
