"""``/api/v1/sites``: the registered sites as an operator sees them (``fedcare sites``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter

from fedcare.coordinator.status_view import site_state
from fedcare.dashboard.context import API_PREFIX, Ctx, User
from fedcare.dashboard.views import site_entry

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["sites"])


@router.get("/sites")
def list_sites(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """Registered sites: state, last seen, version, datasets offered."""
    now = datetime.now(timezone.utc)
    return [
        site_entry(s, site_state(s.status, s.last_seen, now, ctx.liveness_s))
        for s in ctx.store.list_sites()
    ]
