"""The web dashboard: server-rendered pages (Jinja2) over the same context as the API.

A person signs in with their API token (``/login``); the token then rides in the
``fedcare_session`` cookie (HttpOnly, Secure, SameSite=Strict). Every page but ``/login`` and
the static files needs it: without it the answer is a redirect to ``/login``. Pages carry a
strict Content-Security-Policy (scripts only from ``/static``, no inline script): data for
the live parts comes from the JSON API and its event stream, read by ``/static/fedcare.js``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import plotly
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from fedcare.coordinator.rows import UserInfo
from fedcare.dashboard.auth import SESSION_COOKIE
from fedcare.dashboard.context import Ctx, get_ctx
from fedcare.dashboard.forms import url_form
from fedcare.dashboard.views import study_brief

__all__ = ["STATIC", "page_user", "render", "router"]

router = APIRouter(include_in_schema=False)

_ENV = Environment(
    loader=PackageLoader("fedcare.dashboard", "templates/pages"),
    autoescape=select_autoescape(["html", "j2"]),
)
_HERE = Path(__file__).parent
#: The static files pages load (no CDN: the dashboard works without the internet).
STATIC: dict[str, tuple[Path, str]] = {
    "plotly.min.js": (
        Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
        "text/javascript",
    ),
    "fedcare.css": (_HERE / "static" / "fedcare.css", "text/css"),
    "fedcare.js": (_HERE / "static" / "fedcare.js", "text/javascript"),
    "study.js": (_HERE / "static" / "study.js", "text/javascript"),
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: What a study's status means, in plain words.
STATUS_WORDS = {
    "pending": "waiting to start",
    "running": "running",
    "completed": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}


def render(template: str, user: UserInfo | None, **values: Any) -> HTMLResponse:
    """A page from ``templates/pages/<template>`` with the security headers."""
    html = _ENV.get_template(template).render(user=user, status_words=STATUS_WORDS, **values)
    return HTMLResponse(html, headers=_HEADERS)


def page_user(request: Request) -> UserInfo:
    """The signed-in person (from the session cookie); a redirect to ``/login`` otherwise."""
    try:
        return get_ctx(request).auth.user(request, None)
    except HTTPException as err:
        if err.status_code != 401:
            raise
        target = quote(request.url.path, safe="/")
        location = {"Location": f"/login?next={target}"}
        raise HTTPException(303, "sign in first", headers=location) from None


PageUser = Annotated[UserInfo, Depends(page_user)]


def _safe_next(value: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/studies"
    return value


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    """The sign-in page: paste the API token from ``fedcare users add``."""
    return render("login.html.j2", None, next=_safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token; on success keep it in the session cookie and go on."""
    form = await url_form(request)
    token = form.get("token", "").strip()
    target = _safe_next(form.get("next"))
    ctx = get_ctx(request)
    try:
        user = ctx.auth.user(request, None, token=token)
    except HTTPException as err:
        message = (
            "Too many failed sign-ins from this computer; wait a minute and try again."
            if err.status_code == 429
            else "That token is not valid (unknown, expired or revoked). Ask an operator."
        )
        refused = render("login.html.j2", None, next=target, error=message)
        refused.status_code = err.status_code
        return refused
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, secure=True, samesite="strict", path="/"
    )
    ctx.audit.person_action("signed-in", user.name, role=user.role, via="dashboard")
    return response


@router.post("/logout")
def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(user: PageUser) -> Response:
    """The dashboard starts at the studies list."""
    return RedirectResponse("/studies", status_code=303)


@router.get("/studies")
def studies_page(user: PageUser, ctx: Ctx) -> HTMLResponse:
    """The studies the person may see, newest first."""
    studies = ctx.store.list_studies()
    if user.role == "study-lead":
        studies = [s for s in studies if s.owner == user.name]
    rows = [study_brief(s) for s in reversed(studies)]
    return render("studies.html.j2", user, studies=rows)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The pages' script, style and plotly (no token needed: they hold no data)."""
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    path, media = STATIC[name]
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})
