"""The coordinator's privacy ledger: a mirror of what each site's own ledger spends.

Rows are added by :meth:`~fedcare.coordinator.store_rounds.RoundsMixin.record_round`, in the
round's transaction (:func:`add_privacy_rows`), one per (study, round, site, dataset): the DP
events the site spent in that round and the site's epsilon on that dataset after it, composed
over ALL the site's rows for the dataset (every study) with the same accountant and delta as
the site's ledger (:mod:`fedcare.privacy.budget`), so the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedcare.coordinator.db import PrivacyLedgerRow
from fedcare.coordinator.store_base import StoreBase

__all__ = ["LedgerEntry", "PrivacyLedgerMixin", "PrivacySpend", "add_privacy_rows"]


@dataclass(frozen=True)
class PrivacySpend:
    """What a site spent in a round: its DP events (dict form) on ``dataset``."""

    site_id: str
    dataset: str
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class LedgerEntry:
    """A stored mirror-ledger row."""

    study_id: str
    round: int
    site_id: str
    dataset: str
    events: list[dict[str, Any]]
    epsilon_after: float
    recorded_at: datetime


def _site_events(s: Session, site_id: str, dataset: str) -> list[dict[str, Any]]:
    stmt = (
        select(PrivacyLedgerRow.events)
        .where(PrivacyLedgerRow.site_id == site_id, PrivacyLedgerRow.dataset == dataset)
        .order_by(PrivacyLedgerRow.id)
    )
    return [e for events in s.scalars(stmt) for e in events]


def add_privacy_rows(
    s: Session, study_id: str, round: int, spends: Sequence[PrivacySpend], now: datetime
) -> None:
    """Add the mirror rows of one round inside the caller's (the round's) transaction."""
    from fedcare.privacy.budget import ledger_epsilon  # numpy and scipy: not for status commands

    for spend in spends:
        if not spend.events:
            continue
        history = _site_events(s, spend.site_id, spend.dataset)
        s.add(
            PrivacyLedgerRow(
                study_id=study_id,
                round=round,
                site_id=spend.site_id,
                dataset=spend.dataset,
                events=[dict(e) for e in spend.events],
                epsilon_after=ledger_epsilon([*history, *spend.events]),
                recorded_at=now,
            )
        )


def _entry(row: PrivacyLedgerRow) -> LedgerEntry:
    return LedgerEntry(
        row.study_id,
        row.round,
        row.site_id,
        row.dataset,
        list(row.events),
        float(row.epsilon_after),
        row.recorded_at,
    )


class PrivacyLedgerMixin(StoreBase):
    """Read the mirror ledger."""

    def privacy_ledger(
        self, study_id: str | None = None, *, site_id: str | None = None
    ) -> list[LedgerEntry]:
        """Mirror rows (of a study and/or a site, or all), in the order they were written."""
        stmt = select(PrivacyLedgerRow).order_by(PrivacyLedgerRow.id)
        if study_id is not None:
            stmt = stmt.where(PrivacyLedgerRow.study_id == study_id)
        if site_id is not None:
            stmt = stmt.where(PrivacyLedgerRow.site_id == site_id)
        with self._tx(write=False) as s:
            return [_entry(r) for r in s.scalars(stmt)]

    def site_epsilon(self, study_id: str) -> dict[str, float]:
        """Each site's epsilon on the study's dataset after the study's last mirrored round
        (composed over every study on that dataset, as the site's own ledger reports it)."""
        out: dict[str, float] = {}
        for entry in self.privacy_ledger(study_id):
            out[entry.site_id] = entry.epsilon_after
        return dict(sorted(out.items()))
