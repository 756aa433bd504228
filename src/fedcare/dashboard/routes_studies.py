"""``/api/v1/studies``: list, detail, cancel, rounds, results and report (the study lead's own;
operators and auditors all). Submitting is in :mod:`.routes_submit`, the event stream in
:mod:`.routes_events`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse

from fedcare.coordinator.audit_trail import round_summary
from fedcare.coordinator.results import study_report
from fedcare.coordinator.rows import StudyInfo, UserInfo
from fedcare.coordinator.status_view import latest_site_errors
from fedcare.dashboard.context import API_PREFIX, ApiContext, Ctx, User
from fedcare.dashboard.rounds_view import round_entries
from fedcare.dashboard.views import study_brief, study_detail
from fedcare.errors import ConflictError, FedcareError

__all__ = ["cancel", "router"]

router = APIRouter(prefix=API_PREFIX, tags=["studies"])


@router.get("/studies")
def list_studies(user: User, ctx: Ctx) -> list[dict[str, Any]]:
    """The studies the caller may see, oldest first."""
    studies = ctx.store.list_studies()
    if user.role == "study-lead":
        studies = [s for s in studies if s.owner == user.name]
    return [study_brief(s) for s in studies]


@router.get("/studies/{study_id}", response_class=JSONResponse)
def get_study(study_id: str, user: User, ctx: Ctx) -> JSONResponse:
    """A study: status, progress, rounds, the last round per site, refusals, epsilon."""
    study = ctx.visible_study(user, study_id)
    rounds, errors = _summaries(ctx, study)
    return JSONResponse(study_detail(ctx.store, study, rounds=rounds, site_errors=errors))


def _summaries(
    ctx: ApiContext, study: StudyInfo
) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, str]]:
    """``([(round info, round_summary)...], {site: latest error line})``, read from the
    store only for rounds after those cached (a recorded round never changes)."""
    rounds = list(ctx.rounds.get(study.id, "summaries"))
    start = rounds[-1][0].round + 1 if rounds else 0
    new = [(r, round_summary(r.record)) for r in ctx.store.list_rounds(study.id, min_round=start)]
    if new:
        ctx.rounds.put(study.id, rounds + new, "summaries")
    upto, errors = ctx.rounds.get(study.id, "refusals", (-1, {}))
    done = study.last_completed_round
    if done is not None and done > upto:  # errors up to a recorded round are final
        found = latest_site_errors(ctx.store, study.id, min_round=upto + 1, max_round=done)
        upto, errors = done, {**errors, **found}
        ctx.rounds.put(study.id, (upto, errors), "refusals")
    latest = {**errors, **latest_site_errors(ctx.store, study.id, min_round=upto + 1)}
    return rounds + new, latest


def cancel(ctx: ApiContext, user: UserInfo, study_id: str, *, via: str) -> StudyInfo:
    """Mark the study ``user`` may see cancelled (its runner stops after the current round);
    audited ``study-cancel-requested``. 404/403/409 as HTTPException. The API's route and the
    study page's Cancel button (``via``: ``api``, ``dashboard``)."""
    study = ctx.visible_study(user, study_id)
    ctx.require(user, ("operator", "study-lead"), "cancel studies")
    try:
        study = ctx.store.set_study_status(study.id, "cancelled", f"cancelled by {user.name}")
    except ConflictError as err:
        raise HTTPException(409, str(err)) from None
    ctx.audit.person_action(
        "study-cancel-requested", user.name, study_id=study.id, role=user.role, via=via
    )
    return study


@router.post("/studies/{study_id}/cancel")
def cancel_study(study_id: str, user: User, ctx: Ctx) -> dict[str, Any]:
    """Stop a study after its current round (its operator or the lead who submitted it)."""
    return study_brief(cancel(ctx, user, study_id, via="api"))


@router.get("/studies/{study_id}/rounds", response_class=JSONResponse)
def get_rounds(study_id: str, user: User, ctx: Ctx) -> JSONResponse:
    """Each round: status, times, metrics, and per site what happened (task sent, replied,
    aggregated, refused or failed with the reason, timed out, not used), the reply's kind and
    size in bytes."""
    study = ctx.visible_study(user, study_id)
    # plain JSON already: straight to the response (no jsonable_encoder walk over it)
    return JSONResponse(round_entries(ctx.store, study, cache=ctx.rounds))


#: The report is our own page with inline plotly: it runs sandboxed (no cookies, no API).
REPORT_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
)


@router.get("/studies/{study_id}/results", response_class=JSONResponse)
def get_results(study_id: str, user: User, ctx: Ctx) -> Any:
    """The results.json that ``fedcare study report`` writes (an analytics job's result)."""
    study = ctx.visible_study(user, study_id)
    try:
        results, _ = study_report(ctx.store, study.id, html=False)
    except FedcareError as err:  # an analytics job without a result yet; a broken record
        raise HTTPException(409, f"no results for this study: {err}") from None
    return JSONResponse(results)


@router.get("/studies/{study_id}/report", response_class=HTMLResponse)
def get_report(study_id: str, user: User, ctx: Ctx, download: bool = False) -> HTMLResponse:
    """The report.html that ``fedcare study report`` writes (``?download=true``: as a file)."""
    study = ctx.visible_study(user, study_id)
    try:
        _, html = study_report(ctx.store, study.id)
    except FedcareError as err:
        raise HTTPException(409, f"no report for this study: {err}") from None
    headers = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="report-{study.id[:12]}.html"'
    return HTMLResponse(html, headers=headers)
