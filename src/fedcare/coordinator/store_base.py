"""What every part of the coordinator store shares: engine, sessions, artifacts, clock, locks.

Every public store method runs in its own short transaction (:meth:`StoreBase._tx`). Writers
take locks in one order — the study row first, then task rows — so two writers never wait on
each other in a cycle on PostgreSQL; on SQLite a writer holds the database's write lock from
its first statement (``BEGIN IMMEDIATE``), so writers simply queue.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from sqlalchemy import URL, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.db import SiteRow, StudyRow, TaskRow
from fedcare.coordinator.engine import WRITE_OPTION, make_engine
from fedcare.coordinator.migrate import require_schema, upgrade
from fedcare.errors import ConflictError, NotFoundError, StoreError, ValidationError

__all__ = ["OPEN_TASK_STATUSES", "Clock", "StoreBase", "utcnow"]

Clock = Callable[[], datetime]
OPEN_TASK_STATUSES = ("pending", "delivered")
INT32_MAX = 2**31 - 1  # INTEGER columns (round, attempt, num_samples) on PostgreSQL
R = TypeVar("R")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class StoreBase:
    """Engine, session factory, artifact folder and clock of a coordinator store.

    Parameters
    ----------
    url:
        Database URL (``sqlite:///state.db`` or ``postgresql+psycopg://...``).
    artifacts_root:
        Folder of the content-addressed artifacts.
    busy_timeout_s:
        SQLite only: how long a writer waits for the write lock.
    engine_options:
        Extra keyword arguments for :func:`sqlalchemy.create_engine`.
    migrate:
        Bring the database to the newest schema on open (the default).
    create:
        Create the database if missing (the default); with False only a database that
        already holds the coordinator's schema is opened (NotFoundError otherwise).
    clock:
        Returns the current aware UTC time (tests inject a fake one).
    """

    def __init__(
        self,
        url: str | URL,
        artifacts_root: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        engine_options: Mapping[str, Any] | None = None,
        migrate: bool = True,
        create: bool = True,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = make_engine(
            url, busy_timeout_s=busy_timeout_s, engine_options=engine_options, create=create
        )
        try:
            if not create:
                require_schema(self.engine)
            if migrate:
                upgrade(self.engine)
            self.artifacts = ArtifactStore(artifacts_root)
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._clock = clock

    def close(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Session]:
        """One transaction: commit when the block ends, roll back if it raises.

        Database failures other than integrity errors (which callers turn into
        ConflictError) become StoreError naming the database.
        """
        try:
            with self._sessions.begin() as session:
                if write:
                    session.connection(execution_options={WRITE_OPTION: True})
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as err:
            where = self.engine.url.render_as_string(hide_password=True)
            raise StoreError(f"database {where} failed: {err}") from err

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValidationError(f"the store's clock returned a naive datetime {now!r}")
        return now.astimezone(timezone.utc)

    @staticmethod
    def _study(
        s: Session, study_id: str, lock: Literal["none", "share", "update"] = "none"
    ) -> StudyRow:
        """The study row, locked as asked on PostgreSQL; NotFoundError if there is none."""
        stmt = select(StudyRow).where(StudyRow.id == study_id)
        if lock != "none":
            stmt = stmt.with_for_update(read=lock == "share")
        row = s.scalars(stmt).one_or_none()
        if row is None:
            raise NotFoundError(f"no study with id {study_id!r}")
        return row

    @staticmethod
    def _running_study(
        s: Session, study_id: str, doing: str, lock: Literal["none", "share", "update"] = "none"
    ) -> StudyRow:
        """The study row if it is running; ConflictError naming ``doing`` if not."""
        study = StoreBase._study(s, study_id, lock)
        if study.status != "running":
            raise ConflictError(
                f"cannot {doing}: study {study_id!r} is {study.status!r}, not 'running'"
            )
        return study

    @staticmethod
    def _site(s: Session, site_id: str) -> SiteRow:
        row = s.get(SiteRow, site_id)
        if row is None:
            raise NotFoundError(f"no site with id {site_id!r}")
        return row

    @staticmethod
    def _expire_where(s: Session, *conditions: Any, **values: Any) -> int:
        """Mark the open tasks matching ``conditions`` expired (and set ``values``); return
        how many."""
        result = s.execute(
            update(TaskRow)
            .where(TaskRow.status.in_(OPEN_TASK_STATUSES), *conditions)
            .values(status="expired", **values)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def check_int(value: object, name: str, *, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    """``value`` if it is an int in ``[minimum, maximum]`` (not a bool); else ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be an int in [{minimum}, {maximum}], got {value!r}")
    return value


def check_id(value: object, name: str, *, max_len: int = 128) -> str:
    """``value`` if it is a non-empty string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValidationError(
            f"{name} must be a non-empty string of at most {max_len} characters, got {value!r}"
        )
    return value


def check_duration(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValidationError(f"{name} must be >= 0, got {value!r}")
    return float(value)
