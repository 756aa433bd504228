"""The site console: a small web app for a site's data steward, over the site home.

:func:`create_console_app` builds it (FastAPI, pages rendered on the server from the Jinja2
templates in ``templates/console``, no script); ``fedcare site console`` serves it on
127.0.0.1 (:mod:`fedcare.cli.console`). It reads and changes exactly the state the steward's
commands use: decisions go through :func:`fedcare.site.stewardship.steward_store`, sealed with
the site kit's key and audited as ``approval`` / ``refusal`` / ``revocation`` entries naming
the signed-in steward (``steward``, the name given at sign-in) and ``via: console``.

Every page but the sign-in page needs a session (GET: redirect to ``/signin``; POST: 401);
every POST carries the session's CSRF token (403 otherwise) and, when the browser sends an
``Origin``, it must be this server's own (403 otherwise).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedcare.dashboard.auth import FailureLimiter
from fedcare.dashboard.console_auth import COOKIE, Session, Sessions, token_matches
from fedcare.dashboard.console_data import (
    package_review,
    plan_rows,
    policy_in_force,
    policy_rows,
    read_audit,
    size_text,
    status_words,
    studies_from_audit,
)
from fedcare.dashboard.forms import url_form
from fedcare.errors import FedcareError
from fedcare.site.approvals import Approval, ApprovalStore, parse_until
from fedcare.site.stewardship import (
    DEFAULT_APPROVAL_DAYS,
    default_until,
    login_name,
    steward_store,
    verify_site_audit,
)

__all__ = ["create_console_app"]

AUDIT_PAGE = 100
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send "Origin: null"
    "Cache-Control": "no-store",
}


class _NotSignedIn(Exception):
    pass


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("fedcare.dashboard", "templates/console"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["size"] = size_text
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


def _session_or_none(request: Request) -> Session | None:
    sessions: Sessions = request.app.state.sessions
    return sessions.get(request.cookies.get(COOKIE))


def _session(request: Request) -> Session:
    found = _session_or_none(request)
    if found is None:
        raise _NotSignedIn
    return found


def _same_origin(request: Request) -> None:
    """403 when the browser says the form comes from another site (its ``Origin``)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "the form was sent from another site")


async def _checked(request: Request) -> tuple[Session, dict[str, str]]:
    """The session and form of a POST whose CSRF token and origin are this session's."""
    found = _session(request)
    _same_origin(request)
    form = await url_form(request)
    if not found.csrf_matches(form.get("csrf", "")):
        raise HTTPException(403, "the form's security token is missing or out of date")
    return found, form


Signed = Annotated[Session, Depends(_session)]
Posted = Annotated[tuple[Session, dict[str, str]], Depends(_checked)]


def create_console_app(
    home: Path,
    kit: Path,
    token: str,
    *,
    policy_file: Path | None = None,
    secure_cookie: bool = False,
) -> FastAPI:
    """The console of the site whose state folder is ``home`` and whose kit is ``kit``.

    ``token``: the sign-in token (:func:`fedcare.dashboard.console_auth.ensure_token`);
    ``policy_file``: the policy to show (default: the one the agent last started with);
    ``secure_cookie``: mark the session cookie ``Secure`` (served over TLS).
    """
    home, kit = Path(home), Path(kit)
    app = FastAPI(title="fedcare site console", docs_url=None, redoc_url=None, openapi_url=None)
    env, sessions, limiter = _env(), Sessions(), FailureLimiter()
    app.state.sessions = sessions

    def page(template: str, request: Request, status: int = 200, /, **context: Any) -> HTMLResponse:
        session = _session_or_none(request)
        html = env.get_template(f"{template}.html.j2").render(
            session=session, path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    @app.exception_handler(_NotSignedIn)
    async def not_signed_in(request: Request, _: _NotSignedIn) -> Response:
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(f"/signin?next={quote(request.url.path)}", 303, _HEADERS)
        return HTMLResponse("sign in first", 401, headers=_HEADERS)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return page("error", request, err.status_code, message=err.detail)

    def store() -> ApprovalStore:
        return ApprovalStore.in_state_dir(home)

    def row_of(approval_id: int) -> Approval:
        try:
            rows = store().list()
        except FedcareError as err:
            raise HTTPException(500, str(err)) from None
        for row in rows:
            if row.id == approval_id:
                return row
        raise HTTPException(404, f"no plan numbered {approval_id} at this site")

    # --- signing in ------------------------------------------------------------------------
    @app.get("/signin")
    def signin_page(request: Request, next: str = "/plans") -> HTMLResponse:
        return page("signin", request, name=login_name(), next=_local(next))

    @app.post("/signin")
    async def signin(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if limiter.blocked(client):
            raise HTTPException(429, "too many failed sign-ins; wait a minute and try again")
        _same_origin(request)  # no session yet, so no CSRF token: the origin at least
        form = await url_form(request)
        name, given = form.get("name", "").strip(), form.get("token", "")
        target = _local(form.get("next", "/plans"))
        if not token_matches(given, token):
            limiter.fail(client)
            return page("signin", request, 401, name=name, next=target,
                        error="That sign-in token is not this site's console token.")  # fmt: skip
        if not name or len(name) > 80 or not name.isprintable():
            return page("signin", request, 400, name="", next=target,
                        error="Give your name (up to 80 characters): your decisions are "
                        "recorded under it.")  # fmt: skip
        sid, _ = sessions.open(name)
        response = RedirectResponse(target, 303, _HEADERS)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure_cookie)
        return response

    @app.post("/signout")
    def signout(request: Request, posted: Posted) -> Response:
        sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/signin", 303, _HEADERS)
        response.delete_cookie(COOKIE)
        return response

    # --- plans and decisions ---------------------------------------------------------------
    @app.get("/")
    def index(request: Request, signed: Signed) -> Response:
        return RedirectResponse("/plans", 303, _HEADERS)

    @app.get("/plans")
    def plans(request: Request, signed: Signed) -> HTMLResponse:
        now = datetime.now(timezone.utc)
        try:
            rows = store().list()
        except FedcareError as err:
            return page("plans", request, 500, error=str(err), pending=[], decided=[])
        pending = [r for r in rows if r.status == "pending"]
        decided = sorted(
            (r for r in rows if r.status != "pending"), key=lambda r: r.decided_at, reverse=True
        )
        return page("plans", request, pending=pending, decided=decided,
                    words=lambda r: status_words(r, now))  # fmt: skip

    @app.get("/plans/{approval_id}")
    def plan(request: Request, approval_id: int, signed: Signed, done: str = "") -> HTMLResponse:
        return plan_page(request, signed, row_of(approval_id), done=done)

    def plan_page(
        request: Request, signed: Session, row: Approval, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        now = datetime.now(timezone.utc)
        policy = policy_in_force(read_audit(home), policy_file).policy
        try:
            review, review_problem = package_review(home, kit, row.plan_hash, policy), ""
        except (FedcareError, OSError) as err:
            review, review_problem = [], f"the plan's package cannot be shown: {err}"
        check = None if row.status != "approved" else steward_store(home, kit).check(
            row.study, row.plan_hash, now
        )  # fmt: skip
        split = next((i for i, line in enumerate(review) if line.startswith("changes:")), None)
        return page(
            "plan", request, status, row=row, status_words=status_words(row, now),
            rows=plan_rows(row.summary), review_head=review[:split],
            review_changes=review[split].removeprefix("changes:").strip() if split is not None
            else "", review_diff=review[split + 1:] if split is not None else [],
            review_problem=review_problem, check=check,
            default_until=default_until().date().isoformat(), days=DEFAULT_APPROVAL_DAYS,
            raw={"approval_id": row.approval_id, "study": row.study, "plan_hash": row.plan_hash,
                 "status": row.status, "until": row.until_text(), "note": row.note,
                 "decided_at": row.decided_text(), "sealed": bool(row.sig)}, **extra,
        )  # fmt: skip

    def decide(request: Request, posted: tuple[Session, dict[str, str]], approval_id: int,
               action: str) -> Response:  # fmt: skip
        signed, form = posted
        row, note = row_of(approval_id), form.get("note", "").strip()
        decider = steward_store(home, kit, person=signed.name, via="console")
        try:
            if action == "approve":
                until = parse_until(form.get("until", "").strip() or default_until().isoformat())
                if until <= datetime.now(timezone.utc):
                    raise FedcareError(f"the expiry {until:%Y-%m-%d %H:%M} UTC is in the past")
                decider.approve(row.study, row.plan_hash, until, note)
            elif action == "refuse":
                decider.refuse(row.study, row.plan_hash, note)
            else:
                decider.revoke(row.study, row.plan_hash, note)
        except FedcareError as err:
            return plan_page(
                request, signed, row, 400, error=str(err).replace("--until", "The expiry")
            )
        return RedirectResponse(f"/plans/{row.id}?done={action}", 303, _HEADERS)

    @app.post("/plans/{approval_id}/approve")
    def approve(request: Request, approval_id: int, posted: Posted) -> Response:
        return decide(request, posted, approval_id, "approve")

    @app.post("/plans/{approval_id}/refuse")
    def refuse(request: Request, approval_id: int, posted: Posted) -> Response:
        return decide(request, posted, approval_id, "refuse")

    @app.post("/plans/{approval_id}/revoke")
    def revoke(request: Request, approval_id: int, posted: Posted) -> Response:
        return decide(request, posted, approval_id, "revoke")

    # --- policy, ledger, audit, studies ----------------------------------------------------
    @app.get("/policy")
    def policy(request: Request, signed: Signed) -> HTMLResponse:
        view = policy_in_force(read_audit(home), policy_file)
        rows = policy_rows(view.policy) if view.policy is not None else []
        raw = view.policy.summary() if view.policy is not None else None
        return page("policy", request, view=view, rows=rows, raw=raw)

    @app.get("/ledger")
    def ledger(request: Request, signed: Signed) -> HTMLResponse:
        from fedcare.site.ledger import SiteLedger

        view = policy_in_force(read_audit(home), policy_file)
        caps = view.policy.epsilon_cap if view.policy is not None else {}
        try:
            book = SiteLedger.in_state_dir(home)
            lines, spends, error = book.summary(), book.spends(), ""
        except FedcareError as err:
            lines, spends, error = [], [], str(err)
        return page("ledger", request, lines=lines, spends=spends, caps=caps, error=error)

    @app.get("/audit")
    def audit(request: Request, signed: Signed, page_no: int = 1, event: str = "") -> HTMLResponse:
        entries = read_audit(home)
        try:
            verdict, problem = verify_site_audit(home, kit), ""
        except FedcareError as err:
            verdict, problem = None, str(err)
        events = sorted({str(e.get("event")) for e in entries})
        chosen = [e for e in reversed(entries) if not event or e.get("event") == event]
        page_no = max(1, page_no)
        shown = chosen[(page_no - 1) * AUDIT_PAGE : page_no * AUDIT_PAGE]
        return page("audit", request, verdict=verdict, problem=problem, entries=shown,
                    events=events, event=event, page_no=page_no,
                    more=len(chosen) > page_no * AUDIT_PAGE, total=len(chosen))  # fmt: skip

    @app.get("/studies")
    def studies(request: Request, signed: Signed) -> HTMLResponse:
        return page("studies", request, studies=studies_from_audit(read_audit(home)))

    return app


def _local(target: str) -> str:
    """``target`` if it is a path on this server, else ``/plans`` (no open redirect)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/plans"
