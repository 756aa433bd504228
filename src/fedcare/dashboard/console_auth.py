"""Who may use the site console: the local token, sessions and their CSRF tokens.

The token is a random secret in the site home (``HOME/console-token``, mode 0600), created at
the console's first start and printed once; whoever can read that file (the site's own
account) may sign in. A sign-in opens a session: a random id in an HttpOnly, SameSite=Strict
cookie (``Secure`` too over TLS), kept in memory only (a restart signs everyone out), with
its own random CSRF token that every form carries and every POST must echo.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedcare.errors import ConfigError

__all__ = ["COOKIE", "TOKEN_FILE", "Session", "Sessions", "ensure_token", "token_matches"]

TOKEN_FILE = "console-token"
COOKIE = "fedcare_console"
#: A session ends this long after sign-in.
SESSION_TTL_S = 8 * 3600.0


def ensure_token(home: Path) -> tuple[str, bool]:
    """The console token of the site home ``home`` and whether it was created just now.

    Created with mode 0600 (exclusively: two starts at once cannot both write it).

    Raises
    ------
    ConfigError
        If the file cannot be written or read, is empty, or others than its owner may read
        it (naming the ``chmod`` that fixes it).
    """
    path = Path(home) / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path), False
    except OSError as err:
        raise ConfigError(f"the console token {path} cannot be created ({err})") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, True


def _read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(f"the console token {path} cannot be read ({err})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the console token {path} may be read by other accounts (mode "
            f"{stat.S_IMODE(mode):o}); run `chmod 600 {path}` (or delete it for a new token)"
        )
    if not token:
        raise ConfigError(f"the console token {path} is empty; delete it for a new token")
    return token


def token_matches(given: str, expected: str) -> bool:
    """Whether ``given`` is the token (compared in constant time)."""
    return hmac.compare_digest(given.strip().encode(), expected.encode())


@dataclass(frozen=True)
class Session:
    """A signed-in steward: the name their decisions are recorded under, and the session's
    CSRF token."""

    name: str
    csrf: str
    expires: float

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """The open sessions, in memory (thread-safe)."""

    def __init__(
        self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._open: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, name: str) -> tuple[str, Session]:
        """A new session for ``name``: (its id for the cookie, the session)."""
        sid = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), self._clock() + self.ttl_s)
        with self._lock:
            self._open[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session of ``sid``, or None (an ended one is forgotten)."""
        if not sid:
            return None
        with self._lock:
            session = self._open.get(sid)
            if session is not None and session.expires <= self._clock():
                del self._open[sid]
                return None
            return session

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._open.pop(sid or "", None)
