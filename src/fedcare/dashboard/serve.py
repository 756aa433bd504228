"""Serve the HTTP API with uvicorn in a background thread, over TLS."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from fedcare.errors import ConfigError

__all__ = ["ApiServer", "serve_api"]


class ApiServer:
    """A running API server: its ``port``; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server, self._thread, self.port = server, thread, port

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout_s)


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
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fedcare-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"the HTTP API did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return ApiServer(server, thread, int(bound))
