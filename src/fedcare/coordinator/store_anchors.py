"""Sites' audit heads held by the coordinator (``audit_anchors``, migration 0004).

:meth:`AnchorsMixin.last_anchor` is the newest countersigned head of a site; every head a
site presents is kept, countersigned (``anchored``) or as a detected ``rollback`` with the
reason, so an operator can see when a site's log went back (:mod:`.anchoring`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from fedcare.coordinator.db import AuditAnchorRow
from fedcare.coordinator.store_base import StoreBase

__all__ = ["AnchorInfo", "AnchorsMixin"]


@dataclass(frozen=True)
class AnchorInfo:
    """One stored site head."""

    site_id: str
    seq: int
    hash: str
    site_sig: str
    countersig: str | None
    status: str
    message: str | None
    anchored_at: datetime


def _info(row: AuditAnchorRow) -> AnchorInfo:
    return AnchorInfo(
        row.site_id,
        row.seq,
        row.hash,
        row.site_sig,
        row.countersig,
        row.status,
        row.message,
        row.anchored_at,
    )


class AnchorsMixin(StoreBase):
    """Audit anchors of the sites."""

    def last_anchor(self, site_id: str) -> AnchorInfo | None:
        """The site's newest countersigned head, or None."""
        with self._tx(write=False) as s:
            row = s.scalars(
                select(AuditAnchorRow)
                .where(AuditAnchorRow.site_id == site_id, AuditAnchorRow.status == "anchored")
                .order_by(AuditAnchorRow.seq.desc(), AuditAnchorRow.id.desc())
                .limit(1)
            ).one_or_none()
            return None if row is None else _info(row)

    def record_anchor(
        self,
        site_id: str,
        seq: int,
        hash_: str,
        site_sig: str,
        *,
        countersig: str | None,
        status: str,
        message: str | None = None,
        at: datetime | None = None,
    ) -> AnchorInfo:
        """Keep a head a site presented (countersigned, or a detected rollback)."""
        with self._tx(write=True) as s:
            row = AuditAnchorRow(
                site_id=site_id,
                seq=seq,
                hash=hash_,
                site_sig=site_sig,
                countersig=countersig,
                status=status,
                message=message,
                anchored_at=at or self._now(),
            )
            s.add(row)
            s.flush()
            return _info(row)

    def audit_anchors(self, site_id: str | None = None) -> list[AnchorInfo]:
        """Every stored head (of one site), oldest first."""
        stmt = select(AuditAnchorRow).order_by(AuditAnchorRow.id)
        if site_id is not None:
            stmt = stmt.where(AuditAnchorRow.site_id == site_id)
        with self._tx(write=False) as s:
            return [_info(r) for r in s.scalars(stmt)]
