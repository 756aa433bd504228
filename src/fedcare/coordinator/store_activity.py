"""What a person is shown of a study's rounds and a site's replies: read-only queries of plain
columns (no ORM objects), for the status commands and the HTTP API.

* :meth:`ActivityMixin.study_activity`: a study's tasks with their replies, as
  :class:`~fedcare.coordinator.rows.TaskInfo` and :class:`~fedcare.coordinator.rows.ReplyInfo`;
* :meth:`ActivityMixin.round_activity` and :meth:`ActivityMixin.round_briefs` (both in one
  transaction: :meth:`ActivityMixin.round_view`): the lighter rows the rounds view reads
  (only the columns it shows; no checkpoint digests, no study check);
* :meth:`ActivityMixin.site_errors` and :meth:`ActivityMixin.start_refusals`: a site's latest
  error reply in each study and the studies that refused sites at their start, one query each.

Replies are joined to tasks by :meth:`ActivityMixin._replies_of_tasks` (on PostgreSQL one
index lookup per task, never a scan of every study's replies).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any

from sqlalchemy import DateTime, FromClause, Select, func, select, true, type_coerce

from fedcare.coordinator.db import ReplyRow, RoundRow, TaskRow, UTCDateTime
from fedcare.coordinator.rows import ActivityRow, ReplyInfo, RoundBrief, SiteError, TaskInfo
from fedcare.coordinator.store_base import StoreBase

__all__ = ["ActivityMixin"]

_TASK_FIELDS = [f.name for f in fields(TaskInfo)]
#: The reply's own columns, in ReplyInfo's order (the task's study, round... come between).
_REPLY_FIELDS: tuple[str, ...] = ("task_id", "site_id", "received_at", "payload_digest")
_REPLY_FIELDS += ("error_kind", "error_message", "num_samples")
#: ActivityRow's fields: the task's, then its reply's.
_ACTIVITY_TASK = ActivityRow._fields[:8]
_ACTIVITY_REPLY = ActivityRow._fields[8:]
_ORDER = (TaskRow.round, TaskRow.attempt, TaskRow.created_at, TaskRow.id)


def _briefs(study_id: str, min_round: int) -> Select[Any]:
    return (
        select(RoundRow.round, RoundRow.record, RoundRow.duration_s, RoundRow.completed_at)
        .where(RoundRow.study_id == study_id, RoundRow.round >= min_round)
        .order_by(RoundRow.round)
    )


class ActivityMixin(StoreBase):
    """Read a study's tasks and replies, its rounds' records and a site's errors."""

    def study_activity(
        self,
        study_id: str,
        *,
        min_round: int = 0,
        max_round: int | None = None,
        errors_only: bool = False,
    ) -> list[tuple[TaskInfo, ReplyInfo | None]]:
        """Every task of the study in rounds ``min_round`` to ``max_round`` (None: the
        last), each with its reply (None before one arrived), oldest first; with
        ``errors_only`` only tasks answered with an error. One query."""
        task_cols = [getattr(TaskRow, name) for name in _TASK_FIELDS]
        stmt = self._tasks_with_replies(
            task_cols, _REPLY_FIELDS, study_id, min_round, max_round, errors_only
        )
        width = len(_TASK_FIELDS)
        with self._tx(write=False) as s:
            rows = s.execute(stmt).all()
        out: list[tuple[TaskInfo, ReplyInfo | None]] = []
        for row in rows:
            task = TaskInfo(*row[:width])
            reply = None
            if row[width] is not None:
                task_id, site, received, digest, kind, message, samples = row[width:]
                reply = ReplyInfo(
                    task_id, site, task.study_id, task.round, task.attempt, task.kind,
                    received, digest, kind, message, samples,
                )  # fmt: skip
            out.append((task, reply))
        return out

    def round_activity(self, study_id: str, *, min_round: int = 0) -> list[ActivityRow]:
        """The study's tasks from round ``min_round`` on, oldest first, each with what is
        shown of it and of its reply (:class:`~fedcare.coordinator.rows.ActivityRow`): what
        :meth:`study_activity` reads, less the ids, digests and counts the rounds view does
        not show. One query; ``[]`` for an unknown study."""
        with self._tx(write=False) as s:
            return [ActivityRow(*row) for row in s.execute(self._activity(study_id, min_round))]

    def round_briefs(self, study_id: str, *, min_round: int = 0) -> list[RoundBrief]:
        """The study's recorded rounds from ``min_round`` on, in order: number, record,
        duration and end (:meth:`~fedcare.coordinator.store_rounds.RoundsMixin.list_rounds`
        without the checkpoint digests and the check that the study exists: ``[]`` for an
        unknown study). One query."""
        with self._tx(write=False) as s:
            return [RoundBrief(*row) for row in s.execute(_briefs(study_id, min_round))]

    def round_view(
        self, study_id: str, *, min_round: int = 0
    ) -> tuple[list[RoundBrief], list[ActivityRow]]:
        """:meth:`round_briefs` and :meth:`round_activity` in one read transaction: one
        connection from the pool, two queries (each transaction costs round trips of its own:
        the pool's ping, BEGIN, COMMIT)."""
        with self._tx(write=False) as s:
            briefs = [RoundBrief(*row) for row in s.execute(_briefs(study_id, min_round))]
            rows = s.execute(self._activity(study_id, min_round))
            return briefs, [ActivityRow(*row) for row in rows]

    def _activity(self, study_id: str, min_round: int) -> Select[Any]:
        """The query of :meth:`round_activity`. On PostgreSQL its times are read as the
        driver gives them (timezone-aware, in the session's time zone) rather than through
        :class:`~fedcare.coordinator.db.UTCDateTime`, which would convert each of thousands
        to UTC: who shows them converts them (:func:`fedcare.dashboard.views.iso`)."""
        task_cols = [getattr(TaskRow, name) for name in _ACTIVITY_TASK]
        stmt = self._tasks_with_replies(
            task_cols, _ACTIVITY_REPLY, study_id, min_round, None, False
        )
        if self.engine.dialect.name != "postgresql":
            return stmt
        aware = DateTime(timezone=True)
        return stmt.with_only_columns(
            *(
                type_coerce(c, aware).label(c.name) if isinstance(c.type, UTCDateTime) else c
                for c in stmt.selected_columns
            ),
            maintain_column_froms=True,
        )

    def site_errors(self, site_id: str) -> list[SiteError]:
        """``site_id``'s latest error reply in each study (latest: of the highest round, then
        attempt, then the newest task), in no particular order. One query over the site's
        failed tasks (a task answered with an error is ``failed``), not over every study."""
        latest = (
            func.row_number()
            .over(partition_by=TaskRow.study_id, order_by=[c.desc() for c in _ORDER])
            .label("latest")
        )
        ranked = (
            select(
                TaskRow.study_id,
                TaskRow.round,
                TaskRow.kind,
                ReplyRow.error_kind,
                ReplyRow.error_message,
                latest,
            )
            .join(ReplyRow, ReplyRow.task_id == TaskRow.id)
            .where(TaskRow.site_id == site_id, TaskRow.status == "failed")
            .where(ReplyRow.error_kind.is_not(None))
            .subquery()
        )
        stmt = select(*(ranked.c[name] for name in SiteError._fields)).where(ranked.c.latest == 1)
        with self._tx(write=False) as s:
            return [SiteError(*row) for row in s.execute(stmt)]

    def start_refusals(self, study_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """``{study: {site: reason}}``: the sites refused at the start (round 0's record's
        ``refused_sites``) of those of ``study_ids`` that recorded a round 0 refusing some.
        One query of that part of the record, by the rounds' (study, round) index."""
        if not study_ids:
            return {}
        refused = RoundRow.record["refused_sites"]
        stmt = select(RoundRow.study_id, refused).where(
            RoundRow.study_id.in_(list(study_ids)), RoundRow.round == 0
        )
        with self._tx(write=False) as s:
            rows = s.execute(stmt).all()
        return {study: dict(sites) for study, sites in rows if isinstance(sites, dict) and sites}

    def _tasks_with_replies(
        self,
        task_cols: list[Any],
        reply_fields: tuple[str, ...],
        study_id: str,
        min_round: int,
        max_round: int | None,
        errors_only: bool,
    ) -> Select[Any]:
        """A study's tasks in rounds ``min_round`` to ``max_round``, oldest first, with the
        ``reply_fields`` of their replies (NULL before one; only error replies' tasks with
        ``errors_only``)."""
        replies = self._replies_of_tasks()
        stmt = (
            select(*task_cols, *(replies.c[name] for name in reply_fields))
            .where(TaskRow.study_id == study_id, TaskRow.round >= min_round)
            .order_by(*_ORDER)
        )
        if max_round is not None:
            stmt = stmt.where(TaskRow.round <= max_round)
        lateral = self.engine.dialect.name == "postgresql"
        on = true() if lateral else replies.c.task_id == TaskRow.id
        if errors_only:
            return stmt.join(replies, on).where(replies.c.error_kind.is_not(None))
        return stmt.outerjoin(replies, on)

    def _replies_of_tasks(self) -> FromClause:
        """The replies to join to a query of tasks.

        On PostgreSQL a LATERAL subquery, correlated on the task's id: one index lookup per
        task. A plain join lets the planner hash the whole replies table (every study's) for
        one study's tasks, which grows with the number of studies (17 of 20 ms for 600 tasks
        among 60 000 replies); ``LIMIT 1`` (a task has at most one reply) keeps it from
        flattening the subquery back into that join. Elsewhere (SQLite: no LATERAL, and its
        planner already looks each reply up by ``task_id``) the replies table, to be joined
        on ``task_id``.
        """
        if self.engine.dialect.name != "postgresql":
            return ReplyRow.__table__
        cols = [getattr(ReplyRow, name) for name in _REPLY_FIELDS]
        return select(*cols).where(ReplyRow.task_id == TaskRow.id).limit(1).lateral()
