"""A real HTTPS client of the event stream: reads ``(event, data)`` as they arrive."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from .helpers import Api


class EventStream:
    """``GET path`` with ``token``; events are read on a thread into :meth:`next`."""

    def __init__(self, api: Api, path: str, token: str) -> None:
        parts = urlsplit(api.url)
        ctx = ssl.create_default_context(cafile=str(api.ca))
        self.conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=30)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())
        self.events: queue.Queue[tuple[str, Any, float] | None] = queue.Queue()
        self.comments: list[str] = []
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event, data = "message", ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = line[len("data: ") :]
                elif line == "" and data:
                    self.events.put((event, json.loads(data), time.monotonic()))
                    event, data = "message", ""
        except (OSError, ValueError, AttributeError):  # closed under the reader
            pass
        self.events.put(None)  # the stream ended

    def next(self, timeout: float = 10.0) -> tuple[str, Any, float] | None:
        """The next event ``(name, data, when received)``; None once the stream closed."""
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        """Hang up (a shutdown first: the reader thread holds the response's buffer)."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
