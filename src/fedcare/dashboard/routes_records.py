"""``/api/v1/models``, ``/api/v1/analytics`` and ``/api/v1/ledger``: the model registry (as
``fedcare models list|show|export``), federated analytics jobs and the privacy ledger. A study
lead sees those of the studies they submitted (404 for any other); operators and auditors all.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from fedcare.coordinator.registry_view import export_files, export_zip
from fedcare.dashboard.context import API_PREFIX, Ctx, User
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


@router.get("/analytics/{job_id}", tags=["analytics"])
def get_job(job_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """One analytics job (a whole id or a unique prefix): status, spec and result (null
    until the sites have answered)."""
    return analytics_job(ctx, user, job_id)


@router.get("/ledger", tags=["privacy"])
def privacy_ledger(user: User, ctx: Ctx) -> dict[str, Any]:
    """The privacy ledger: epsilon spent per site and dataset, and per study."""
    return ledger(ctx, user)
