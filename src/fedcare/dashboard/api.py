"""The coordinator's HTTP API (FastAPI), versioned under ``/api/v1``, and its web pages.

:func:`create_app` builds both over a coordinator store and its audit trail; serve it with
:func:`fedcare.dashboard.serve.serve_api`. The schema is at ``/api/v1/openapi.json`` (like
every route but health, for signed-in users only).

Roles: an ``operator`` sees and does everything; an ``auditor`` reads everything and changes
nothing (403); a ``study-lead`` sees the studies they submitted (``owner``) and cancels them —
another's study, or one submitted on the coordinator's host, is answered 404 as if it did not
exist. Every change is written to the coordinator audit naming the person.

The routes live in ``routes_*.py`` (JSON) and ``pages.py`` (HTML), each an ``APIRouter``
over the shared :mod:`fedcare.dashboard.context`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard import (
    pages,
    pages_records,
    pages_studies,
    routes_audit,
    routes_deployments,
    routes_events,
    routes_records,
    routes_sites,
    routes_studies,
    routes_submit,
)
from fedcare.dashboard.auth import Authenticator, FailureLimiter
from fedcare.dashboard.context import API_PREFIX, ApiContext, User

__all__ = ["API_PREFIX", "create_app"]


def create_app(
    store: CoordinatorStore,
    audit: CoordinatorAudit,
    *,
    home: Path | None = None,
    failure_limit: int = 10,
    failure_window_s: float = 60.0,
    liveness_s: float = 30.0,
) -> FastAPI:
    """The API and pages over ``store``, auditing changes to ``audit``.

    Parameters
    ----------
    home:
        The coordinator's home folder (uploaded packages, reports); None for a bare store.
    failure_limit, failure_window_s:
        Failed authentications allowed per client address in the window before 429.
    liveness_s:
        Seconds of silence after which a site shows as stale (as ``fedcare sites``).
    """
    auth = Authenticator(store, FailureLimiter(failure_limit, failure_window_s))
    app = FastAPI(title="fedcare coordinator API", version="1", openapi_url=None, docs_url=None)
    app.state.ctx = ApiContext(store, audit, auth, home=home, liveness_s=liveness_s)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness of the API (the only route answered without a token)."""
        return {"status": "ok"}

    routers = (
        routes_submit.router,  # POST /studies before the routes of one study
        routes_studies.router,
        routes_events.router,
        routes_sites.router,
        routes_records.router,
        routes_deployments.router,
        routes_audit.router,
        pages_studies.router,  # /studies/new and /studies/{id} pages
        pages.router,
        pages_records.router,
    )
    for router in routers:
        app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError) -> Any:
        """A malformed request: 422 with one line naming each bad field (as every error)."""
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "the body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    def openapi(user: User) -> dict[str, Any]:
        """The OpenAPI schema of this API (for any signed-in user, like every route)."""
        return app.openapi()

    return app
