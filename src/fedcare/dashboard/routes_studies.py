"""``/api/v1/studies``: list, detail and cancel (the study lead's own; operators all)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from fedcare.dashboard.context import API_PREFIX, Ctx, User
from fedcare.dashboard.views import study_brief, study_detail
from fedcare.errors import ConflictError

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["studies"])


@router.get("/studies")
def list_studies(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """The studies the caller may see, oldest first."""
    studies = ctx.store.list_studies()
    if user.role == "study-lead":
        studies = [s for s in studies if s.owner == user.name]
    return [study_brief(s) for s in studies]


@router.get("/studies/{study_id}")
def get_study(study_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """A study: status, progress, rounds, the last round per site, refusals, epsilon."""
    return study_detail(ctx.store, ctx.visible_study(user, study_id))


@router.post("/studies/{study_id}/cancel")
def cancel_study(study_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """Stop a study after its current round (its operator or the lead who submitted it)."""
    study = ctx.visible_study(user, study_id)
    ctx.require(user, ("operator", "study-lead"), "cancel studies")
    try:
        study = ctx.store.set_study_status(study.id, "cancelled", f"cancelled by {user.name}")
    except ConflictError as err:
        raise HTTPException(409, str(err)) from None
    ctx.audit.person_action(
        "study-cancel-requested", user.name, study_id=study.id, role=user.role, via="api"
    )
    return study_brief(study)
