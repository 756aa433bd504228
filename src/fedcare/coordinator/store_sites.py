"""The site registry: provisioned sites, their status, agent version and datasets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedcare.coordinator.db import SITE_STATUSES, SiteRow, TaskRow
from fedcare.coordinator.jsonsafe import to_json
from fedcare.coordinator.rows import SiteInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_id
from fedcare.errors import ConflictError, ValidationError

__all__ = ["SITE_TRANSITIONS", "SitesMixin"]

#: Which status a site may move to from each status. A revoked certificate stays revoked.
SITE_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"revoked", "withdrawn"}),
    "withdrawn": frozenset({"active", "revoked"}),
    "revoked": frozenset(),
}


class SitesMixin(StoreBase):
    """Register sites, note when they were seen, change their status, list them."""

    def register_site(
        self,
        site_id: str,
        cert_serial: str,
        *,
        version: str | None = None,
        datasets: Any = None,
    ) -> SiteInfo:
        """Add a provisioned site, ``active``.

        Parameters
        ----------
        site_id:
            The site's id (the common name of its certificate).
        cert_serial:
            Serial number of the site's certificate.
        version:
            Version of the site agent, if known.
        datasets:
            JSON-able description of the site's datasets, by dataset name (default: ``{}``).

        Raises
        ------
        ConflictError
            If a site with this id is already registered.
        ValidationError
            If an argument is malformed.
        """
        check_id(site_id, "site_id")
        check_id(cert_serial, "cert_serial")
        stored = to_json({} if datasets is None else datasets, f"site {site_id!r} datasets")
        now = self._now()
        row = SiteRow(
            id=site_id,
            cert_serial=cert_serial,
            status="active",
            version=version,
            datasets=stored,
            first_seen=None,
            last_seen=None,
            created_at=now,
        )
        try:
            with self._tx(write=True) as s:
                if s.get(SiteRow, site_id) is not None:
                    raise ConflictError(f"site {site_id!r} is already registered")
                s.add(row)
        except IntegrityError as err:  # a concurrent registration won
            raise ConflictError(f"site {site_id!r} is already registered") from err
        return snapshot(SiteInfo, row)

    def touch_site(
        self,
        site_id: str,
        *,
        version: str | None = None,
        datasets: Any = None,
        cert_serial: str | None = None,
    ) -> SiteInfo:
        """Note that ``site_id`` was seen now; update its version, datasets and certificate
        serial (hex, the one it presented at Hello: a rotated site's new one) if given.

        Raises
        ------
        NotFoundError
            If the site is not registered.
        """
        stored = None if datasets is None else to_json(datasets, f"site {site_id!r} datasets")
        now = self._now()
        with self._tx(write=True) as s:
            row = self._site(s, site_id)
            row.first_seen = row.first_seen or now
            row.last_seen = now
            if version is not None:
                row.version = version
            if stored is not None:
                row.datasets = stored
            if cert_serial is not None:
                row.cert_serial = check_id(cert_serial, "cert_serial")
        return snapshot(SiteInfo, row)

    def set_site_status(self, site_id: str, status: str) -> SiteInfo:
        """Move a site to ``status``; a site leaving ``active`` has its open tasks expired.

        Raises
        ------
        NotFoundError
            If the site is not registered.
        ValidationError
            If ``status`` is not a site status.
        ConflictError
            If the move is not allowed (see :data:`SITE_TRANSITIONS`); nothing changes.
        """
        if status not in SITE_STATUSES:
            raise ValidationError(f"site status must be one of {SITE_STATUSES}, got {status!r}")
        with self._tx(write=True) as s:
            row = self._site(s, site_id)
            if status not in SITE_TRANSITIONS[row.status]:
                raise ConflictError(
                    f"site {site_id!r} cannot go from {row.status!r} to {status!r}; allowed: "
                    f"{sorted(SITE_TRANSITIONS[row.status]) or 'none'}"
                )
            row.status = status
            if status != "active":
                self._expire_where(s, TaskRow.site_id == site_id)
        return snapshot(SiteInfo, row)

    def get_site(self, site_id: str) -> SiteInfo:
        """The site ``site_id``; NotFoundError if it is not registered."""
        with self._tx(write=False) as s:
            return snapshot(SiteInfo, self._site(s, site_id))

    def list_sites(self, status: str | None = None) -> list[SiteInfo]:
        """Every registered site (or those with ``status``), sorted by id."""
        stmt = select(SiteRow).order_by(SiteRow.id)
        if status is not None:
            stmt = stmt.where(SiteRow.status == status)
        with self._tx(write=False) as s:
            return [snapshot(SiteInfo, r) for r in s.scalars(stmt)]
