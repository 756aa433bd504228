"""Rounds: record a completed round atomically, read the last checkpoint back.

:meth:`RoundsMixin.record_round` first writes the round's two artifacts (content-addressed,
atomic, idempotent), then in ONE transaction inserts the round row, advances the study's last
completed round and expires the round's open tasks. A crash before the commit leaves at most
unreferenced artifacts (harmless; the retry writes the same files); a crash after it leaves
the whole round. Nothing ever points at an artifact that is not on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.db import RoundRow, StudyRow, TaskRow
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.rows import Checkpoint, RoundInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_duration, check_int
from fedcare.coordinator.store_ledger import PrivacySpend, add_privacy_rows
from fedcare.errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:  # numpy stays out of the store's imports (fedcare status loads the store)
    from fedcare.transport.arrays_wire import EncodedParts

__all__ = ["RoundsMixin"]


def _expire_open_tasks(s: Session, study_id: str, round: int) -> int:
    """Expire every open task of ``round`` (any attempt): the round is over."""
    return StoreBase._expire_where(s, TaskRow.study_id == study_id, TaskRow.round == round)


def _duplicate(study_id: str, round: int) -> ConflictError:
    return ConflictError(f"study {study_id!r} round {round} is already recorded")


def _check_round(s: Session, study: StudyRow, round: int) -> None:
    """Refuse a round that is already recorded or is not the study's next one."""
    stmt = select(RoundRow.id).where(RoundRow.study_id == study.id, RoundRow.round == round)
    if s.scalar(stmt) is not None:
        raise _duplicate(study.id, round)
    last = study.last_completed_round
    expected = (0, 1) if last is None else (last + 1,)
    if round not in expected:
        raise ConflictError(
            f"study {study.id!r}: cannot record round {round}; the last completed round is "
            f"{last}, so the next must be {' or '.join(map(str, expected))}"
        )


class RoundsMixin(StoreBase):
    """Record completed rounds and read them back."""

    def record_round(
        self,
        study_id: str,
        round: int,
        *,
        params: bytes | EncodedParts,
        state: bytes | EncodedParts,
        record: Mapping[str, Any],
        duration_s: float,
        privacy: Sequence[PrivacySpend] = (),
    ) -> RoundInfo:
        """Persist a completed round: its checkpoint artifacts and its record, atomically.

        Parameters
        ----------
        study_id:
            A ``running`` study.
        round:
            The round: 0 or 1 for the first recorded, then always the last completed + 1.
        params, state:
            Serialized global parameters and strategy state (stored as artifacts).
        record:
            The round's record (``RoundRecord.to_dict()``: measurements and evaluation),
            stored as JSON (non-finite floats become null).
        duration_s:
            How long the round took.
        privacy:
            What each site spent in the round: rows of the privacy ledger, written in the
            round's transaction (:mod:`fedcare.coordinator.store_ledger`).

        Returns
        -------
        RoundInfo
            The stored round.

        Raises
        ------
        NotFoundError
            If there is no such study.
        ConflictError
            If the round is already recorded, is not the next one, or the study is not
            running; nothing changes in the database.
        ValidationError
            If an argument is malformed.
        """
        check_int(round, "round")
        seconds = check_duration(duration_s, "duration_s")
        if not all(isinstance(x, bytes) or hasattr(x, "parts") for x in (params, state)):
            raise ValidationError("params and state must be bytes (or their encoded parts)")
        stored = to_json(record, f"study {study_id!r} round {round} record")
        with self._tx(write=False) as s:  # refuse before writing any artifact
            _check_round(s, self._running_study(s, study_id, f"record round {round}"), round)
        row = RoundRow(
            study_id=study_id,
            round=round,
            status="completed",
            record=stored,
            params_digest=_put(self.artifacts, params),
            state_digest=_put(self.artifacts, state),
            duration_s=seconds,
            completed_at=self._now(),
        )
        try:
            with self._tx(write=True) as s:
                study = self._running_study(s, study_id, f"record round {round}", "update")
                _check_round(s, study, round)
                s.add(row)
                study.last_completed_round = round
                study.updated_at = row.completed_at
                _expire_open_tasks(s, study_id, round)
                add_privacy_rows(s, study_id, round, privacy, row.completed_at)
        except IntegrityError as err:  # a concurrent recorder of the same round won
            raise _duplicate(study_id, round) from err
        return snapshot(RoundInfo, row)

    def last_completed_round(self, study_id: str) -> Checkpoint | None:
        """``(round, params, state)`` of the study's last completed round; None before any.

        Raises
        ------
        NotFoundError
            If there is no such study, or a checkpoint artifact is missing.
        ArtifactCorruptError
            If a checkpoint artifact's bytes no longer match its digest.
        """
        digests = self.last_round_digests(study_id)
        if digests is None:
            return None
        round_, params, state = digests
        return Checkpoint(round_, self.artifacts.get(params), self.artifacts.get(state))

    def last_round_digests(self, study_id: str) -> tuple[int, str, str] | None:
        """``(round, params digest, state digest)`` of the last completed round, nothing read.

        Raises
        ------
        NotFoundError
            If there is no such study.
        """
        with self._tx(write=False) as s:
            study = self._study(s, study_id)
            if study.last_completed_round is None:
                return None
            row = s.scalars(
                select(RoundRow).where(
                    RoundRow.study_id == study_id,
                    RoundRow.round == study.last_completed_round,
                )
            ).one()
            return row.round, row.params_digest, row.state_digest

    def get_round(self, study_id: str, round: int) -> RoundInfo:
        """The recorded round; NotFoundError if it was not recorded."""
        stmt = select(RoundRow).where(RoundRow.study_id == study_id, RoundRow.round == round)
        with self._tx(write=False) as s:
            row = s.scalars(stmt).one_or_none()
        if row is None:
            raise NotFoundError(f"study {study_id!r} has no recorded round {round}")
        return snapshot(RoundInfo, row)

    def list_rounds(self, study_id: str, *, min_round: int | None = None) -> list[RoundInfo]:
        """The study's recorded rounds in order, from round ``min_round`` on if given
        (NotFoundError if there is no such study)."""
        stmt = select(RoundRow).where(RoundRow.study_id == study_id).order_by(RoundRow.round)
        if min_round is not None:
            stmt = stmt.where(RoundRow.round >= min_round)
        with self._tx(write=False) as s:
            self._study(s, study_id)
            return [snapshot(RoundInfo, r) for r in s.scalars(stmt)]


def _put(artifacts: ArtifactStore, data: bytes | EncodedParts) -> str:
    """Store ``data``; a large record's parts are written as they are, never joined."""
    return artifacts.put(data) if isinstance(data, bytes) else artifacts.put_stream(data.parts)
