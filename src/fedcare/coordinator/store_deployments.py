"""Deployments: a model version sent to sites, delivered over the site channel, answered.

One row per (request, site) (migration 0007). Its life: ``requested`` (waiting for the site to
poll) -> ``delivered`` (sent, no answer yet) -> ``pending`` (the site's steward has not
decided; the site asks again when they do) -> ``taken`` / ``refused`` / ``failed``. A site
that says Hello again gets its ``delivered`` and ``pending`` deployments offered again
(:meth:`DeploymentsMixin.reoffer_deployments`): the agent says Hello when its steward decided.
Asking again for a version a site already has (``taken``) or will get (open) returns that row;
after a refusal or a failure it makes a new one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from fedcare.coordinator.db import DeploymentRow, ModelRow
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.rows import snapshot
from fedcare.coordinator.store_base import StoreBase, check_id
from fedcare.errors import ConflictError, NotFoundError, ValidationError

__all__ = ["ANSWERS", "OPEN", "DeploymentInfo", "DeploymentsMixin"]

OPEN = ("requested", "delivered", "pending")
#: What a site's answer may set.
ANSWERS = ("pending", "taken", "refused", "failed")
REASON_MAX = 2000


@dataclass(frozen=True)
class DeploymentInfo:
    """A deployment of one version to one site."""

    id: str
    version: str
    site_id: str
    status: str
    reason: str | None
    bundle_sha256: str
    stored_sha256: str | None
    approved_by: str | None
    requested_by: str
    requested_at: datetime
    updated_at: datetime
    answered_at: datetime | None
    monitoring: Any | None
    monitoring_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


class DeploymentsMixin(StoreBase):
    """Create, deliver and answer deployments."""

    def create_deployment(
        self, version: str, site_id: str, *, bundle_sha256: str, requested_by: str
    ) -> tuple[DeploymentInfo, bool]:
        """The deployment of ``version`` to ``site_id``; True when it was created now.

        An open deployment of the version to the site, or one the site took with the same
        bundle hash, is returned as it is (False).

        Raises
        ------
        NotFoundError
            If the version or the site is unknown (names it).
        ConflictError
            If the site is not active.
        """
        check_id(version, "version")
        check_id(site_id, "site_id")
        check_id(requested_by, "requested_by")
        now = self._now()
        with self._tx(write=True) as s:
            if s.get(ModelRow, version) is None:
                raise NotFoundError(f"no model version {version!r} in the registry")
            site = self._site(s, site_id)
            if site.status != "active":
                raise ConflictError(
                    f"cannot deploy to site {site_id!r}: the site is {site.status!r}"
                )
            for row in s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.version == version, DeploymentRow.site_id == site_id)
                .order_by(DeploymentRow.requested_at.desc())
            ):
                if row.status in OPEN or (
                    row.status == "taken" and row.bundle_sha256 == bundle_sha256
                ):
                    return snapshot(DeploymentInfo, row), False
            row = DeploymentRow(
                id="dep-" + uuid.uuid4().hex[:20],
                version=version,
                site_id=site_id,
                status="requested",
                reason=None,
                bundle_sha256=bundle_sha256,
                stored_sha256=None,
                approved_by=None,
                requested_by=requested_by,
                requested_at=now,
                updated_at=now,
                answered_at=None,
                monitoring=None,
                monitoring_at=None,
            )
            s.add(row)
            s.flush()
            return snapshot(DeploymentInfo, row), True

    def next_deployment_for(self, site_id: str) -> DeploymentInfo | None:
        """The site's oldest ``requested`` deployment, marked ``delivered``; None if none."""
        now = self._now()
        with self._tx(write=True) as s:
            row = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.site_id == site_id, DeploymentRow.status == "requested")
                .order_by(DeploymentRow.requested_at, DeploymentRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            row.status, row.updated_at = "delivered", now
            s.flush()
            return snapshot(DeploymentInfo, row)

    def reoffer_deployments(self, site_id: str) -> int:
        """Offer the site's ``delivered`` and ``pending`` deployments again (its Hello)."""
        with self._tx(write=True) as s:
            done = s.execute(
                update(DeploymentRow)
                .where(
                    DeploymentRow.site_id == site_id,
                    DeploymentRow.status.in_(("delivered", "pending")),
                )
                .values(status="requested", updated_at=self._now())
                .execution_options(synchronize_session=False)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def answer_deployment(
        self,
        deployment_id: str,
        site_id: str,
        status: str,
        *,
        reason: str | None = None,
        stored_sha256: str | None = None,
        approved_by: str | None = None,
    ) -> DeploymentInfo:
        """Record ``site_id``'s answer to its deployment ``deployment_id``.

        Raises
        ------
        NotFoundError
            If there is no such deployment for this site.
        ConflictError
            If it was already answered for good (taken, refused, failed).
        ValidationError
            If ``status`` is not one of :data:`ANSWERS`.
        """
        if status not in ANSWERS:
            raise ValidationError(f"a deployment answer is one of {ANSWERS}, got {status!r}")
        now = self._now()
        with self._tx(write=True) as s:
            row = s.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None or row.site_id != site_id:
                raise NotFoundError(f"no deployment {deployment_id!r} for site {site_id!r}")
            if row.status not in OPEN:
                raise ConflictError(
                    f"deployment {deployment_id!r} was already answered ({row.status})"
                )
            row.status, row.updated_at = status, now
            row.reason = None if reason is None else reason[:REASON_MAX]
            if status != "pending":
                row.answered_at = now
            if stored_sha256 is not None:
                row.stored_sha256 = stored_sha256[:80]
            if approved_by is not None:
                row.approved_by = approved_by[:128]
            s.flush()
            return snapshot(DeploymentInfo, row)

    def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        with self._tx(write=False) as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFoundError(f"no deployment {deployment_id!r}")
            return snapshot(DeploymentInfo, row)

    def list_deployments(
        self, version: str | None = None, site_id: str | None = None
    ) -> list[DeploymentInfo]:
        """Deployments (of one version, to one site), oldest first."""
        stmt = select(DeploymentRow)
        if version is not None:
            stmt = stmt.where(DeploymentRow.version == version)
        if site_id is not None:
            stmt = stmt.where(DeploymentRow.site_id == site_id)
        with self._tx(write=False) as s:
            rows = s.scalars(stmt.order_by(DeploymentRow.requested_at, DeploymentRow.id))
            return [snapshot(DeploymentInfo, r) for r in rows]

    def record_monitoring(
        self, version: str, site_id: str, summary: dict[str, Any]
    ) -> DeploymentInfo:
        """Keep ``summary`` as the latest monitoring of ``version`` at ``site_id``.

        Raises
        ------
        NotFoundError
            If the site has not taken the version.
        """
        now = self._now()
        with self._tx(write=True) as s:
            row = s.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.version == version,
                    DeploymentRow.site_id == site_id,
                    DeploymentRow.status == "taken",
                )
                .order_by(DeploymentRow.answered_at.desc())
                .limit(1)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"site {site_id!r} has not taken model {version!r}")
            row.monitoring, row.monitoring_at, row.updated_at = (
                to_json(summary, "monitoring summary"),
                now,
                now,
            )
            s.flush()
            return snapshot(DeploymentInfo, row)
