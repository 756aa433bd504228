"""``/api/v1/models``, ``/api/v1/analytics`` and ``/api/v1/ledger``: the model registry (as
``fedcare models list|show|export``), federated analytics jobs and the privacy ledger. A study
lead sees those of the studies they submitted (404 for any other); operators and auditors all.
Operators and study leads queue analytics jobs (``POST /analytics``, as ``fedcare analytics
--federation``); auditors may not (403).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fedcare.coordinator.analytics_submit import queue_analytics_job, spec_from_text
from fedcare.coordinator.registry_view import export_files, export_zip
from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, User, current_user
from fedcare.dashboard.records_views import (
    analytics_job,
    analytics_jobs,
    hidden_ancestors,
    ledger,
    model_briefs,
    model_lineage,
    visible_model,
)
from fedcare.errors import FedcareError

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX)

#: The largest analytics submission (its JSON body) accepted (413 beyond).
MAX_SPEC_BYTES = 1024 * 1024


@router.get("/models", tags=["models"])
def list_models(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """Registered model versions, oldest first: version, study, round, model hash, parent,
    number of sites, creation time."""
    return model_briefs(ctx, user)


@router.get("/models/{version}", tags=["models"])
def model_card(version: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """The model card of ``version`` (what ``fedcare models show --json`` prints)."""
    return visible_model(ctx, user, version).card


@router.get("/models/{version}/lineage", tags=["models"])
def lineage(version: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """The models ``version`` was built on (parent first) and those built on it."""
    return model_lineage(ctx, user, version)


@router.get(
    "/models/{version}/download",
    tags=["models"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def download(version: str, user: User, ctx: Ctx) -> Response:
    """A zip archive of what ``fedcare models export`` writes: ``model_card.json``,
    ``lineage.json`` and ``params.npz``."""
    model = visible_model(ctx, user, version)
    try:
        files = export_files(ctx.store, model.version, hidden_ancestors(ctx, user, version))
    except FedcareError as err:
        raise HTTPException(409, f"model {version!r} cannot be exported: {err}") from None
    name = f"model-{model.version}.zip"
    disposition = f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"
    return Response(
        export_zip(files),
        media_type="application/zip",
        headers={"Content-Disposition": disposition},
    )


@router.get("/analytics", tags=["analytics"])
def list_jobs(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """Federated analytics jobs, newest first: status, dataset, queries."""
    return analytics_jobs(ctx, user)


class AnalyticsSubmission(BaseModel):
    """An analytics job to queue: the text of its spec file (YAML)."""

    spec: str = Field(
        description="The analytics spec's text (YAML), as `fedcare analytics` reads it."
    )
    dataset: str | None = Field(
        default=None, description="Run on this dataset instead of the spec's (`--dataset`)."
    )
    min_sites: int = Field(default=1, description="Sites offering the dataset to wait for.")


def analytics_submitter(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
    """The caller if they may queue analytics jobs (operator, study lead); 403 before the
    body is read."""
    ApiContext.require(user, ("operator", "study-lead"), "submit analytics jobs")
    return user


def submit_analytics(ctx: ApiContext, user: UserInfo, body: AnalyticsSubmission) -> dict[str, Any]:
    """Queue the job as ``fedcare analytics SPEC --federation HOME`` does, owned by ``user``;
    audited ``analytics-submitted``. 422 with the one-line reason if it is refused."""
    try:
        spec = spec_from_text(body.spec)
        job_id = queue_analytics_job(
            ctx.store, spec, dataset=body.dataset, min_sites=body.min_sites, owner=user.name
        )
    except FedcareError as err:
        raise HTTPException(422, " ".join(str(err).split())) from None
    job = analytics_job(ctx, user, job_id)
    ctx.audit.person_action(
        "analytics-submitted",
        user.name,
        study_id=job_id,
        name=job["name"],
        dataset=job["dataset"],
        min_sites=body.min_sites,
        role=user.role,
        via="api",
    )
    return job


@router.post("/analytics", tags=["analytics"], status_code=201)
async def post_analytics(
    request: Request,
    user: Annotated[UserInfo, Depends(analytics_submitter)],
    body: AnalyticsSubmission,
    ctx: Ctx,
) -> dict[str, Any]:
    """Queue a federated analytics job (its spec's YAML text), as ``fedcare analytics SPEC
    --federation HOME`` does on the coordinator's host; the caller owns it. 422 with the
    reason if it is refused. Follow it with ``GET /studies/{id}/events``; its result is in
    ``GET /analytics/{id}``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SPEC_BYTES:
        raise HTTPException(413, "the analytics spec is larger than the 1 MB allowed")
    return await run_in_threadpool(submit_analytics, ctx, user, body)


@router.get("/analytics/{job_id}", tags=["analytics"])
def get_job(job_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """One analytics job (a whole id or a unique prefix): status, spec and result (null
    until the sites have answered)."""
    return analytics_job(ctx, user, job_id)


@router.get("/ledger", tags=["privacy"])
def privacy_ledger(user: User, ctx: Ctx) -> dict[str, Any]:
    """The privacy ledger: epsilon spent per site and dataset, and per study."""
    return ledger(ctx, user)
