"""``/api/v1/sites``: the registered sites as ``fedcare sites`` shows them, and one site with
its datasets and its latest refusals (in the studies the caller may see)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fedcare.dashboard.context import API_PREFIX, Ctx, User
from fedcare.dashboard.records_views import site_detail, site_entries

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["sites"])


@router.get("/sites")
def list_sites(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """Registered sites: state (connected, stale, never connected, revoked or rotated),
    last seen, version, datasets offered."""
    return site_entries(ctx)


@router.get("/sites/{site_id}")
def get_site(site_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """One site: state, first and last seen, version, the datasets it offers (with their
    feature schema) and its latest refusals, one plain line each with its study."""
    return site_detail(ctx, user, site_id)
