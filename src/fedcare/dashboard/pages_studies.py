"""The dashboard's study pages: one study (``/studies/{id}``: where it stands, live learning
curves per site, the round timeline, the privacy budget, its model and report), cancelling it,
and submitting a study (``/studies/new``).

The live parts are drawn by ``/static/study.js`` from the JSON API: the page hands it the
study's rounds in a ``<script type="application/json">`` block (no inline script: the CSP
forbids it) and the script follows ``/api/v1/studies/{id}/events``. Changes (cancel, submit)
are form posts to these pages, signed in by the session cookie, which the sign-in check
accepts only from the dashboard's own origin (``Origin``), as the API does.
"""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.context import ApiContext, Ctx
from fedcare.dashboard.forms import read_limited
from fedcare.dashboard.pages import PageUser, render
from fedcare.dashboard.rounds_view import round_entries
from fedcare.dashboard.routes_studies import cancel
from fedcare.dashboard.routes_submit import MAX_PACKAGE_BYTES, submit_text, upload_package
from fedcare.dashboard.views import study_brief

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_SUBMITTERS = ("operator", "study-lead")


def _may_change(user: UserInfo) -> bool:
    return user.role in _SUBMITTERS


@router.get("/studies/new")
def new_study_form(user: PageUser) -> HTMLResponse:
    """The form to submit a study file (and its signed package, if it has one)."""
    if not _may_change(user):
        raise HTTPException(403, "an auditor may not submit studies")
    return render("study_new.html.j2", user, error=None)


def _form_files(request: Request, body: bytes) -> dict[str, tuple[str, bytes]]:
    """``{field: (file name, bytes)}`` of a ``multipart/form-data`` body (the standard
    library's MIME parser: no extra dependency for one form)."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise HTTPException(400, "send the form as multipart/form-data")
    head = f"Content-Type: {kind}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    out: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            data = payload if isinstance(payload, bytes) else b""
            out[name] = (part.get_filename() or "", data)
    return out


def _with_package(text: str, ref: str) -> str:
    """The study text with its package model named by the uploaded archive's hash."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the submission says what is wrong with it
    if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
        doc["model"] = {**doc["model"], "package": ref}
        return yaml.safe_dump(doc, sort_keys=False)
    return text


def _submit_form(ctx: ApiContext, user: UserInfo, files: dict[str, tuple[str, bytes]]) -> str:
    """Upload the package (if any), submit the study; its id. HTTPException if refused."""
    _, study = files.get("study", ("", b""))
    if not study.strip():
        raise HTTPException(422, "choose a study file (.yaml) to submit")
    text = study.decode("utf-8", "replace")
    _, package = files.get("package", ("", b""))
    if package:
        text = _with_package(text, upload_package(ctx, user, package)["package"])
    queue = bool(files.get("queue", ("", b""))[1].strip())
    brief = submit_text(ctx, user, text, queue=queue, via="dashboard")
    return str(brief["id"])


@router.post("/studies/new")
async def submit_form(request: Request, user: PageUser, ctx: Ctx) -> Response:
    """Submit the form's study: to its page when accepted, else the form with the reason."""
    if not _may_change(user):
        raise HTTPException(403, "an auditor may not submit studies")
    body = await read_limited(request, MAX_PACKAGE_BYTES + 1024 * 1024, "the form")
    try:
        files = _form_files(request, body)
        study_id = await run_in_threadpool(_submit_form, ctx, user, files)
    except HTTPException as err:
        page = render("study_new.html.j2", user, error=err.detail)
        page.status_code = err.status_code
        return page
    return RedirectResponse(f"/studies/{study_id}", status_code=303)


def _budget(config: dict[str, Any], spent: dict[str, float]) -> dict[str, Any]:
    privacy = config.get("privacy") or {}
    budget = privacy.get("epsilon") if isinstance(privacy, dict) else None
    rows = [
        {
            "site": site,
            "spent": eps,
            "share": min(100.0, 100.0 * eps / budget) if budget else None,
        }
        for site, eps in sorted(spent.items())
    ]
    mode = privacy.get("mode", "open") if isinstance(privacy, dict) else "open"
    return {"budget": budget, "mode": mode, "rows": rows}


@router.get("/studies/{study_id}")
def study_page(study_id: str, user: PageUser, ctx: Ctx) -> HTMLResponse:
    """One study, in plain words, with its live parts."""
    study = ctx.visible_study(user, study_id)
    rounds = round_entries(ctx.store, study, cache=ctx.rounds)
    models = ctx.store.list_models(study.id)
    brief = study_brief(study)
    data = {"study": brief, "rounds": rounds, "events": f"/api/v1/studies/{study.id}/events"}
    return render(
        "study.html.j2",
        user,
        study=brief,
        config=study.config,
        budget=_budget(study.config, ctx.store.site_epsilon(study.id)),
        model=models[-1] if models else None,
        may_cancel=_may_change(user) and study.status in ("pending", "running"),
        data=data,
    )


@router.post("/studies/{study_id}/cancel")
def cancel_page(study_id: str, user: PageUser, ctx: Ctx) -> Response:
    """The page's Cancel button: as ``POST /api/v1/studies/{id}/cancel``, then back."""
    study = cancel(ctx, user, study_id, via="dashboard")
    return RedirectResponse(f"/studies/{study.id}", status_code=303)
