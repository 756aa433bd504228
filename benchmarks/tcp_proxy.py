"""A TCP proxy that counts the bytes it forwards and cuts its connections on demand.

Put between a site agent and the coordinator (the agent is told the proxy's address with
``fedcare site start --coordinator 127.0.0.1:<port>``), it forwards every byte unmodified, so
mutual TLS runs end to end through it and the coordinator's certificate (valid for 127.0.0.1)
still matches. It counts the bytes of each direction:

* ``UP``: client -> server (site -> coordinator: uploads, Hello, heartbeats);
* ``DOWN``: server -> client (coordinator -> site: tasks, downloads).

:meth:`ByteCountingProxy.cut_at` arms a cut: once a direction's count reaches a threshold, the
proxy forwards exactly up to the threshold, then shuts down and closes every open connection
(FIN, then a TCP reset: ``SO_LINGER`` 0), so both ends see the link fail at once, as after a
crashed middlebox (a silently dropped VPN link would instead be noticed only by keepalive); new
connections are accepted and forwarded again at once, so the agent reconnects when its
backoff allows. :meth:`ByteCountingProxy.cut` cuts now.

Why here and not in ``src/``: it is a measuring instrument, not part of fedcare (nothing in the
product forwards bytes), and benchmarks may import only ``src``. It is plain standard library
(threads and sockets, no fedcare imports), so a test can use it the way ``tests/benchmarks``
imports other benchmark modules (``sys.path`` + ``import tcp_proxy``).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["DOWN", "UP", "ByteCountingProxy", "Cut"]

UP, DOWN = "up", "down"
CHUNK = 256 * 1024


@dataclass(frozen=True)
class Cut:
    """One cut: when (``time.time()``), and each direction's count at that moment."""

    at: float
    up: int
    down: int
    connections: int  # connections open (and cut)


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.dead = False
        self.pumps_done = 0

    def reset(self) -> None:
        """Shut both sockets down (waking the pump threads blocked in ``recv`` or ``send``);
        their close then sends a TCP reset (``SO_LINGER`` 0) after the shutdown's FIN."""
        self.dead = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ByteCountingProxy:
    """Forward ``host:port`` (``port`` 0: a free one, see :attr:`port`) to ``target``.

    Parameters
    ----------
    target:
        ``(host, port)`` of the server.
    host:
        Address to listen on.
    connect_wait_s:
        How long a new client's connection waits for the server to accept one of ours (the
        proxy may start before the server listens); after that the client's is closed.

    Use as a context manager (or :meth:`start` / :meth:`close`). Thread-safe.
    """

    def __init__(
        self,
        target: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
        connect_wait_s: float = 60.0,
    ) -> None:
        self.target = target
        self.connect_wait_s = connect_wait_s
        self._listener = socket.create_server((host, port))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._counts = {UP: 0, DOWN: 0}
        self._links: list[_Link] = []
        self._armed: tuple[str, int] | None = None
        self.cuts: list[Cut] = []
        self.accepted = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    # Lifecycle --------------------------------------------------------------------------------
    def start(self) -> ByteCountingProxy:
        thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop accepting and reset every open connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.reset()

    def __enter__(self) -> ByteCountingProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Counting and cutting ---------------------------------------------------------------------
    def count(self, direction: str) -> int:
        """Bytes forwarded in ``direction`` (:data:`UP` or :data:`DOWN`) since the start."""
        with self._lock:
            return self._counts[direction]

    def cut_at(self, direction: str, threshold: int) -> None:
        """Cut every connection once ``direction``'s count reaches ``threshold`` bytes (counted
        from the start, not from now); at most one cut per call. A threshold already passed
        cuts at the next byte in that direction."""
        if direction not in (UP, DOWN):
            raise ValueError(f"direction must be {UP!r} or {DOWN!r}, got {direction!r}")
        with self._lock:
            self._armed = (direction, int(threshold))

    def cut(self) -> Cut:
        """Reset every open connection now."""
        with self._lock:
            return self._cut_locked()

    def _cut_locked(self) -> Cut:
        links, self._links = self._links, []
        self._armed = None
        event = Cut(time.time(), self._counts[UP], self._counts[DOWN], len(links))
        self.cuts.append(event)
        for link in links:
            link.reset()
        return event

    # Forwarding -------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        """A connection to the target, trying again for :attr:`connect_wait_s` (the server may
        still be starting: the client then waits instead of seeing a failed handshake)."""
        end = time.monotonic() + self.connect_wait_s
        while not self._closed:
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
                return server
            except OSError:
                if time.monotonic() > end:
                    return None
                time.sleep(0.1)
        return None

    def _open(self, client: socket.socket) -> None:
        server = self._connect()
        if server is None:
            with contextlib.suppress(OSError):
                client.close()
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server)
        with self._lock:
            self._links.append(link)
            self.accepted += 1
        threading.Thread(target=self._pump, args=(link, server, client, DOWN), daemon=True).start()
        self._pump(link, client, server, UP)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while not link.dead:
                data = src.recv(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                data, cut = self._account(direction, data)
                if data and not link.dead:
                    dst.sendall(data)
                if cut:
                    with self._lock:
                        self._cut_locked()
                    return
        except OSError:
            link.reset()
        finally:
            self._done(link)

    def _done(self, link: _Link) -> None:
        """One direction of ``link`` ended; after both (or a reset), close its sockets."""
        with self._lock:
            link.pumps_done += 1
            if not (link.dead or link.pumps_done == 2):
                return
            if link in self._links:
                self._links.remove(link)
        for sock in (link.client, link.server):
            with contextlib.suppress(OSError):
                sock.close()

    def _account(self, direction: str, data: bytes) -> tuple[bytes, bool]:
        """Count ``data``; when an armed cut's threshold falls inside it, keep only the bytes up
        to the threshold and say to cut after sending them."""
        with self._lock:
            armed = self._armed
            if armed is not None and armed[0] == direction:
                room = armed[1] - self._counts[direction]
                if room <= len(data):
                    data = data[: max(room, 0)]
                    self._counts[direction] += len(data)
                    return data, True
            self._counts[direction] += len(data)
            return data, False
