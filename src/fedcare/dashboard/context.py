"""What every route of the coordinator's HTTP API and web pages shares: the store, the audit,
who is calling (:func:`current_user`) and which studies they may see.

Route modules (``routes_*.py``, ``pages.py``) define an ``APIRouter`` whose handlers take
``user: User`` (authenticated, 401/429 otherwise) and ``ctx: Ctx``; :func:`create_app` in
:mod:`fedcare.dashboard.api` puts one :class:`ApiContext` on ``app.state.ctx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.rows import StudyInfo, UserInfo
from fedcare.coordinator.status_view import resolve_study_id
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.auth import Authenticator, bearer
from fedcare.dashboard.rounds_view import RoundCache
from fedcare.errors import ConfigError, NotFoundError

__all__ = ["API_PREFIX", "ApiContext", "Ctx", "User", "current_user", "get_ctx"]

API_PREFIX = "/api/v1"


class ApiContext:
    """The coordinator state behind the API: its ``store``, ``audit`` trail and ``home``
    folder (packages, artifacts; None when served over a bare store)."""

    def __init__(
        self,
        store: CoordinatorStore,
        audit: CoordinatorAudit,
        auth: Authenticator,
        *,
        home: Path | None = None,
        liveness_s: float = 30.0,
    ) -> None:
        self.store, self.audit, self.auth = store, audit, auth
        self.home, self.liveness_s = home, liveness_s
        #: completed rounds as the API shows them (:mod:`fedcare.dashboard.rounds_view`)
        self.rounds = RoundCache()

    def visible_study(self, user: UserInfo, study_id: str) -> StudyInfo:
        """The study ``study_id`` (a whole id or a unique prefix) if ``user`` may see it.

        Raises HTTPException 404 when there is none or it is another lead's (a study lead
        cannot even learn that it exists), 409 when a prefix names several studies.
        """
        try:  # a whole id: one row; else a prefix, resolved over the ids
            study: StudyInfo | None = self.store.get_study(study_id)
        except NotFoundError:
            study = None
        if study is None:
            try:
                study_id = resolve_study_id(self.store, study_id)
            except ConfigError as err:
                raise HTTPException(409, str(err)) from None
            try:
                study = self.store.get_study(study_id)
            except NotFoundError:
                study = None
        if study is None or (user.role == "study-lead" and study.owner != user.name):
            raise HTTPException(404, f"no study with id {study_id!r}")
        return study

    @staticmethod
    def require(user: UserInfo, roles: tuple[str, ...], action: str) -> None:
        """403 unless ``user`` has one of ``roles`` (``action`` says what was refused)."""
        if user.role not in roles:
            raise HTTPException(403, f"a {user.role} may not {action}")


def get_ctx(request: Request) -> ApiContext:
    """The app's context (a FastAPI dependency)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> UserInfo:
    """The calling user, from the bearer token or the dashboard's session cookie."""
    return get_ctx(request).auth.user(request, credentials)


User = Annotated[UserInfo, Depends(current_user)]
Ctx = Annotated[ApiContext, Depends(get_ctx)]
