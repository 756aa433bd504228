"""The records pages of the web dashboard: sites, models (card, lineage, download), analytics
jobs, the privacy ledger and the coordinator's audit trail. Server-rendered from the same
dicts as the JSON API (:mod:`fedcare.dashboard.records_views`), with the same visibility;
every page needs a signed-in person (a redirect to ``/login`` otherwise)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse

from fedcare.coordinator.audit_view import audit_head, audit_page
from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.context import Ctx
from fedcare.dashboard.pages import PageUser, render
from fedcare.dashboard.records_views import (
    analytics_job,
    analytics_jobs,
    ledger,
    model_briefs,
    model_lineage,
    site_detail,
    site_entries,
    visible_model,
)
from fedcare.dashboard.routes_audit import audit_path, audit_verification

__all__ = ["health_words", "router"]

router = APIRouter(include_in_schema=False)
AUDIT_PAGE_SIZE = 50


def health_words(state: str) -> tuple[str, str]:
    """A site's state in plain words, and its tone (``ok``, ``warn``, ``bad``)."""
    if state.startswith("connected"):
        extra = state.partition(", ")[2]
        return ("Online" + (f" ({extra})" if extra else ""), "ok")
    if state.startswith("stale (last seen "):
        ago = state.removeprefix("stale (last seen ").split(" ago")[0]
        return f"Not heard from for {ago}", "warn"
    if state == "never connected":
        return "Has never connected", "warn"
    if state.startswith("revoked"):
        return f"Access revoked{state.removeprefix('revoked')}", "bad"
    if state == "withdrawn":
        return "Withdrawn from the federation", "bad"
    return state, "warn"


def _raw(value: Any) -> str:
    """JSON for a <details> block (the only raw JSON a page shows)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _page(template: str, user: UserInfo, build: Callable[[], dict[str, Any]]) -> HTMLResponse:
    """Render ``template`` with what ``build`` returns; a refusal (403, 404...) of the same
    rules as the API becomes a page saying why, with its status."""
    try:
        values = build()
    except HTTPException as err:
        page = render("message.html.j2", user, status=err.status_code, message=str(err.detail))
        page.status_code = err.status_code
        return page
    return render(template, user, health_words=health_words, raw=_raw, **values)


@router.get("/sites")
def sites_page(user: PageUser, ctx: Ctx) -> HTMLResponse:
    """Every site: health in plain words, version, last seen, datasets."""
    return _page("sites.html.j2", user, lambda: {"sites": site_entries(ctx)})


@router.get("/sites/{site_id}")
def site_page(site_id: str, user: PageUser, ctx: Ctx) -> HTMLResponse:
    """One site: health, datasets with their columns, its latest refusals."""
    return _page("site.html.j2", user, lambda: {"site": site_detail(ctx, user, site_id)})


@router.get("/models")
def models_page(user: PageUser, ctx: Ctx) -> HTMLResponse:
    """The registered models, newest first."""
    return _page("models.html.j2", user, lambda: {"models": model_briefs(ctx, user)[::-1]})


@router.get("/models/{version}")
def model_page(version: str, user: PageUser, ctx: Ctx) -> HTMLResponse:
    """A model's card, readable, its lineage with links, and a download button."""

    def build() -> dict[str, Any]:
        model = visible_model(ctx, user, version)
        study = next((s for s in model_briefs(ctx, user) if s["version"] == version), {})
        return {
            "model": study,
            "card": model.card,
            "lineage": model_lineage(ctx, user, version),
        }

    return _page("model.html.j2", user, build)


@router.get("/analytics")
def analytics_page(user: PageUser, ctx: Ctx) -> HTMLResponse:
    """Federated analytics jobs and where each stands (a finished one's result behind
    "technical details")."""

    def build() -> dict[str, Any]:
        jobs = [analytics_job(ctx, user, j["id"]) for j in analytics_jobs(ctx, user)]
        return {"jobs": jobs}

    return _page("analytics.html.j2", user, build)


@router.get("/privacy")
def privacy_page(user: PageUser, ctx: Ctx) -> HTMLResponse:
    """The privacy budget each site has spent, per dataset and per study."""
    return _page("privacy.html.j2", user, lambda: {"ledger": ledger(ctx, user)})


@router.get("/audit")
def audit_page_(
    user: PageUser,
    ctx: Ctx,
    page: Annotated[int, Query(ge=1)] = 1,
    verify: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    """Pages of the coordinator's audit trail (newest first), a "Verify now" button (or its
    result) and the export link; operators and auditors only."""

    def build() -> dict[str, Any]:
        path = audit_path(ctx, user)
        entries = audit_page(path, (page - 1) * AUDIT_PAGE_SIZE, AUDIT_PAGE_SIZE)
        pages = max(1, -(-entries.total // AUDIT_PAGE_SIZE))
        return {
            "entries": entries.entries,
            "total": entries.total,
            "page": page,
            "pages": pages,
            "head": audit_head(path),
            "verification": audit_verification(path, ctx) if verify else None,
        }

    return _page("audit.html.j2", user, build)
