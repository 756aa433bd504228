"""Serve the HTTP API (or the site console) with uvicorn in a background thread.

The coordinator's API always over TLS (:func:`serve_api`); the site console over plain HTTP
only on a loopback address (:func:`serve_http`), else over TLS too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from fedcare.errors import ConfigError

__all__ = ["ApiServer", "serve_api", "serve_coordinator_api", "serve_http"]


class ApiServer:
    """A running API server: its ``port``; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server, self._thread, self.port = server, thread, port
        self.on_stop: list[Callable[[], None]] = []

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving, wait for the thread, then run :attr:`on_stop` (closing the store...)."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        for close in self.on_stop:
            close()


def serve_api(
    app: Any,
    host: str,
    port: int,
    certfile: Path,
    keyfile: Path,
    *,
    start_timeout_s: float = 15.0,
) -> ApiServer:
    """Serve ``app`` on ``host:port`` (0: any free port) over TLS with the certificate and key
    (the coordinator kit's ``cert.pem`` and ``key.pem``, signed by the federation CA).

    Raises
    ------
    ConfigError
        If the server does not start within ``start_timeout_s`` (port taken, bad key...).
    """
    return _serve(app, host, port, (certfile, keyfile), start_timeout_s)


def serve_http(app: Any, host: str, port: int, *, start_timeout_s: float = 15.0) -> ApiServer:
    """Serve ``app`` on ``host:port`` (0: any free port) over plain HTTP: for a loopback
    address only (the site console on the steward's own machine).

    Raises
    ------
    ConfigError
        If ``host`` is not a loopback address, or the server does not start.
    """
    if not is_loopback(host):
        raise ConfigError(f"plain HTTP is served on a loopback address only, not on {host!r}")
    return _serve(app, host, port, None, start_timeout_s)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(
    app: Any, host: str, port: int, tls: tuple[Path, Path] | None, start_timeout_s: float
) -> ApiServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=None if tls is None else str(tls[0]),
        ssl_keyfile=None if tls is None else str(tls[1]),
        log_level="warning",
        lifespan="off",
        # the client address is the peer's: an X-Forwarded-For header cannot dodge the
        # per-address limit on failed authentications (uvicorn trusts it from 127.0.0.1)
        proxy_headers=False,
        # an open event stream (a browser left on a study page) does not hold up a stop
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fedcare-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return ApiServer(server, thread, int(bound))


def serve_coordinator_api(
    home: Path, kit_dir: Path, host: str, port: int, *, db_url: str | None = None, **options: Any
) -> ApiServer:
    """Serve the API of the coordinator home ``home`` (its database: ``db_url`` if given) over
    TLS with the kit's certificate; changes are audited in ``home/audit.jsonl`` signed with
    the kit's key. ``options`` go to :func:`fedcare.dashboard.api.create_app`. Stopping the
    server closes the store and the audit.

    Raises
    ------
    ConfigError
        If ``home`` is not a coordinator home, or the server does not start.
    """
    from fedcare.coordinator.audit_trail import CoordinatorAudit
    from fedcare.coordinator.home import open_home
    from fedcare.dashboard.api import create_app

    store = open_home(home, db_url)
    try:
        audit = CoordinatorAudit.open(home, kit_dir, actor="coordinator-api")
        try:
            server = serve_api(
                create_app(store, audit, home=home, **options),
                host,
                port,
                kit_dir / "cert.pem",
                kit_dir / "key.pem",
            )
        except BaseException:
            audit.close()
            raise
    except BaseException:
        store.close()
        raise
    server.on_stop += [audit.close, store.close]
    return server
