"""A site's state as a person is shown it: heartbeats and the registry status
(:func:`~fedcare.coordinator.status_view.site_state`) plus the coordinator kit's revocation
list (``revoked.json``), read directly, so a site revoked or rotated shows so at once, even if
it never calls again. Shared by ``fedcare sites`` and the HTTP API (``/api/v1/sites``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fedcare.coordinator.rows import SiteInfo
from fedcare.coordinator.status_view import site_state
from fedcare.errors import FedcareError

__all__ = ["certificate_state", "full_site_state", "revocation_list"]


def certificate_state(site_id: str, serial: str, revocations: list[Any]) -> str | None:
    """``revoked (…)`` or ``rotated (new certificate since …)`` from the coordinator's
    revocation list (``revoked.json`` entries), or None. ``serial`` is the one the site last
    presented at Hello (hex): still a rotated-out one means its new kit is not in use yet."""
    mine = [e for e in revocations if e.site_id == site_id]
    revoked = [e for e in mine if e.reason != "rotated"]
    if revoked:
        return f"revoked (certificate {revoked[-1].serial:x} revoked at {revoked[-1].revoked_at})"
    rotated = [e for e in mine if e.reason == "rotated"]
    if not rotated:
        return None
    unused = serial in {f"{e.serial:x}" for e in rotated}
    note = "; the site has not connected with it yet" if unused else ""
    return f"rotated (new certificate since {rotated[-1].revoked_at}{note})"


def revocation_list(home: Path, kit: Path | None = None) -> list[Any] | None:
    """The entries of the coordinator kit's ``revoked.json`` (``kit``, else the kit the
    coordinator recorded in ``home``); None when no kit is known.

    Raises
    ------
    FedcareError
        If the kit holds no ``revoked.json``.
    """
    from fedcare.coordinator.files import recorded_kit
    from fedcare.transport.revocations import read_revocations

    kit = kit or recorded_kit(home)
    if kit is None:
        return None
    if not (kit / "revoked.json").is_file():
        raise FedcareError(f"{kit} holds no revoked.json: pass the coordinator's kit as --kit")
    return read_revocations(kit / "revoked.json")


def full_site_state(
    site: SiteInfo, now: datetime, liveness_s: float, revocations: list[Any] | None
) -> str:
    """What ``fedcare sites`` shows as a site's state: ``connected``, ``stale (…)``, ``never
    connected`` or its registry status, with a revoked or rotated certificate named."""
    state = site_state(site.status, site.last_seen, now, liveness_s)
    cert = certificate_state(site.id, site.cert_serial, revocations or [])
    if cert is not None and site.status != "revoked":
        state = cert if cert.startswith("revoked") else f"{state}, {cert}"
    return state
