"""Studies: create them, read them, move them through their life cycle."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedcare.coordinator.db import STUDY_STATUSES, StudyRow, TaskRow
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.rows import StudyInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_id, check_int
from fedcare.errors import ConflictError, ValidationError

__all__ = ["STUDY_TRANSITIONS", "StudiesMixin"]

#: Which status a study may move to from each status. ``failed -> running`` resumes a study
#: from its last completed round; ``completed`` and ``cancelled`` are final.
STUDY_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
    "failed": frozenset({"running", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}


class StudiesMixin(StoreBase):
    """Create, read, list and change the status of studies."""

    def create_study(
        self,
        name: str,
        config: dict[str, Any],
        seed: int,
        *,
        study_id: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Add a ``pending`` study; return its id.

        Parameters
        ----------
        name:
            Human-readable name (at most 200 characters).
        config:
            The study's configuration, stored as JSON (non-finite floats become null).
        seed:
            The study seed, ``0 <= seed < 2**63``.
        study_id:
            The id to use; a random one (32 hex digits) by default.
        owner:
            The API user submitting it (None: submitted on the coordinator's host).

        Raises
        ------
        ValidationError
            If an argument is malformed (names it).
        ConflictError
            If ``study_id`` is already taken.
        """
        check_id(name, "study name", max_len=200)
        check_int(seed, "seed", maximum=2**63 - 1)
        if not isinstance(config, dict):
            raise ValidationError(f"study config must be a dict, got {type(config).__name__}")
        sid = uuid.uuid4().hex if study_id is None else check_id(study_id, "study_id")
        now = self._now()
        row = StudyRow(
            id=sid,
            name=name,
            config=to_json(config, f"study {name!r} config"),
            seed=seed,
            status="pending",
            reason=None,
            created_at=now,
            updated_at=now,
            last_completed_round=None,
            owner=owner,
        )
        try:
            with self._tx(write=True) as s:
                if s.get(StudyRow, sid) is not None:
                    raise ConflictError(f"a study with id {sid!r} already exists")
                s.add(row)
        except IntegrityError as err:
            raise ConflictError(f"a study with id {sid!r} already exists") from err
        return sid

    def get_study(self, study_id: str) -> StudyInfo:
        """The study ``study_id``; NotFoundError if there is none."""
        with self._tx(write=False) as s:
            return snapshot(StudyInfo, self._study(s, study_id))

    def list_studies(self, status: str | None = None) -> list[StudyInfo]:
        """Every study (or those with ``status``), oldest first."""
        stmt = select(StudyRow).order_by(StudyRow.created_at, StudyRow.id)
        if status is not None:
            stmt = stmt.where(StudyRow.status == status)
        with self._tx(write=False) as s:
            return [snapshot(StudyInfo, r) for r in s.scalars(stmt)]

    def set_study_status(self, study_id: str, status: str, reason: str | None = None) -> StudyInfo:
        """Move a study to ``status`` (with an optional ``reason``, e.g. why it failed).

        A study leaving ``running`` has its open tasks expired in the same transaction.

        Raises
        ------
        NotFoundError
            If there is no such study.
        ValidationError
            If ``status`` is not a study status.
        ConflictError
            If the move is not allowed (see :data:`STUDY_TRANSITIONS`); nothing changes.
        """
        if status not in STUDY_STATUSES:
            raise ValidationError(f"study status must be one of {STUDY_STATUSES}, got {status!r}")
        with self._tx(write=True) as s:
            row = self._study(s, study_id, "update")
            allowed = STUDY_TRANSITIONS[row.status]
            if status not in allowed:
                raise ConflictError(
                    f"study {study_id!r} cannot go from {row.status!r} to {status!r}; "
                    f"allowed: {sorted(allowed) or 'none'}"
                )
            row.status, row.reason, row.updated_at = status, reason, self._now()
            if status != "running":
                self._expire_where(s, TaskRow.study_id == study_id)
        return snapshot(StudyInfo, row)

    def note_study(self, study_id: str, note: str | None) -> bool:
        """Set (or clear, with ``None``) the ``reason`` of a ``running`` study: what it is
        waiting for now, shown by ``fedcare study status``. A study in any other status is
        left as it is (its reason says why it ended); returns whether the note was written.

        Raises
        ------
        NotFoundError
            If there is no such study.
        """
        with self._tx(write=True) as s:
            row = self._study(s, study_id, "update")
            if row.status != "running":
                return False
            if row.reason != note:
                row.reason, row.updated_at = note, self._now()
        return True
