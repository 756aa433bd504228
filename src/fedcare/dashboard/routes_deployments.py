"""``/api/v1/models/{version}/deploy`` and ``/deployments``: sending a model to sites, and
what each site answered (as ``fedcare models deploy|deployments``).

Operators deploy any model; a study lead only the models of studies they submitted (404 for
another's, as for reading it); auditors may read deployments but not deploy (403). A request
is audited ``deployment-requested`` with the person, per site it created.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fedcare.coordinator.deployments import deployment_rows, request_deployment
from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, User, current_user
from fedcare.dashboard.records_views import visible_model
from fedcare.errors import ConflictError, FedcareError, NotFoundError

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX)


class DeployRequest(BaseModel):
    """The sites to send the model to."""

    sites: list[str] = Field(min_length=1, max_length=1000)


def deployer(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
    """The caller if they may deploy models (operator, study lead); 403 before the body is
    read."""
    ApiContext.require(user, ("operator", "study-lead"), "deploy models")
    return user


def _deploy(
    ctx: ApiContext, user: UserInfo, version: str, sites: list[str]
) -> list[dict[str, Any]]:
    model = visible_model(ctx, user, version)
    try:
        infos = request_deployment(ctx.store, model.version, sites, user.name, audit=ctx.audit)
    except NotFoundError as err:
        raise HTTPException(422, str(err)) from None
    except (ConflictError, FedcareError) as err:
        raise HTTPException(409, str(err)) from None
    return deployment_rows(infos)


@router.post("/models/{version}/deploy", tags=["models"], status_code=201)
async def deploy(
    version: str,
    body: DeployRequest,
    user: Annotated[UserInfo, Depends(deployer)],
    ctx: Ctx,
) -> list[dict[str, Any]]:
    """Ask each of ``sites`` to take model ``version`` (its steward decides); one deployment
    per site, an open one returned as it is."""
    return await run_in_threadpool(_deploy, ctx, user, version, body.sites)


@router.get("/models/{version}/deployments", tags=["models"])
def deployments(version: str, user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """The deployments of ``version``, oldest first: site, status, reason, hashes, who
    approved, and the latest monitoring summary the site sent."""
    model = visible_model(ctx, user, version)
    return deployment_rows(ctx.store.list_deployments(model.version))
