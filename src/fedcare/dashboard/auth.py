"""Who is calling the HTTP API: bearer tokens, roles, and a limit on failed attempts.

Every route but ``/api/v1/health`` depends on :meth:`Authenticator.user`. A missing, unknown,
expired or revoked token answers 401; a client address with ``limit`` failures in the last
``window_s`` seconds answers 429 (before its token is even checked) until the window moves on.

The web pages sign in with the same token and keep it in the ``fedcare_session`` cookie
(HttpOnly, Secure, SameSite=Strict), which the API accepts too (a browser's EventSource cannot
send headers). A request that changes something on the strength of that cookie must also come
from the server's own origin (its ``Origin`` header), else 403: no other site's page can make
a signed-in browser cancel a study.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fedcare.coordinator.rows import UserInfo
from fedcare.coordinator.store import CoordinatorStore

__all__ = ["SESSION_COOKIE", "Authenticator", "FailureLimiter", "bearer", "same_origin"]

#: The cookie that carries a signed-in browser's token.
SESSION_COOKIE = "fedcare_session"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: Documents the scheme in the OpenAPI schema; missing headers are answered by us (401).
bearer = HTTPBearer(auto_error=False, description="An API token from `fedcare users add`.")


class FailureLimiter:
    """Failed authentications per client address in a sliding window."""

    def __init__(
        self, limit: int = 10, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        cutoff = self._clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        """Whether ``client`` has used up its failures for now."""
        with self._lock:
            times = self._recent(client)
            if not times:  # forget clients without recent failures
                del self._failures[client]
            return len(times) >= self.limit

    def fail(self, client: str) -> None:
        """Count one failure of ``client``."""
        with self._lock:
            self._recent(client).append(self._clock())


class Authenticator:
    """Turns a request's ``Authorization: Bearer`` header into the calling user."""

    def __init__(self, store: CoordinatorStore, limiter: FailureLimiter) -> None:
        self.store, self.limiter = store, limiter

    def user(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None,
        *,
        token: str | None = None,
    ) -> UserInfo:
        """The authenticated user, from ``token`` (the sign-in form's), else the bearer
        header, else the session cookie; HTTPException 429, 401 or 403 otherwise."""
        client = request.client.host if request.client else "unknown"
        if self.limiter.blocked(client):
            raise HTTPException(
                429,
                "too many failed authentications from this address; try again later",
                headers={"Retry-After": str(int(self.limiter.window_s))},
            )
        from_cookie = token is None and credentials is None
        if token is None:
            token = credentials.credentials if credentials else request.cookies.get(SESSION_COOKIE)
        user = self.store.authenticate(token) if token else None
        unsafe = from_cookie and request.method not in _SAFE_METHODS
        if user is not None and unsafe and not same_origin(request):
            raise HTTPException(403, "a change from another site's page is refused")
        if user is None:
            self.limiter.fail(client)
            raise HTTPException(
                401,
                "missing or invalid API token (unknown, expired or revoked)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return user


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` header is this server's own ``scheme://host``."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return bool(origin and host) and origin == f"{request.url.scheme}://{host}"
