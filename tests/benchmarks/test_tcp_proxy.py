"""The byte-counting proxy of the system benchmark (``benchmarks/tcp_proxy.py``): exact counts
in both directions, a cut exactly at the armed threshold, and connections accepted after it.
Real sockets on 127.0.0.1; the server is a plain TCP service that answers each request."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from tcp_proxy import DOWN, UP, ByteCountingProxy

REPLY = 3  # the server answers each request with 3x its bytes


def _read(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


@pytest.fixture
def server() -> Iterator[tuple[int, list[int]]]:
    """A server that reads a 4-byte length and that many bytes, then sends 3x as many back;
    yields its port and the request sizes it received completely."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[int] = []

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a cut resets the connection
            while True:
                head = _read(conn, 4)
                if len(head) < 4:
                    return
                body = _read(conn, int.from_bytes(head, "big"))
                if len(body) < int.from_bytes(head, "big"):
                    return
                received.append(len(body))
                conn.sendall(b"r" * (REPLY * len(body)))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], received
    listener.close()


def _request(port: int, size: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(size.to_bytes(4, "big") + b"q" * size)
        return _read(sock, REPLY * size)


def test_counts_every_byte_of_both_directions(server: tuple[int, list[int]]) -> None:
    port, received = server
    with ByteCountingProxy(("127.0.0.1", port)) as proxy:
        assert len(_request(proxy.port, 100_000)) == 300_000
        assert len(_request(proxy.port, 5)) == 15
        assert received == [100_000, 5]
        assert proxy.count(UP) == 100_004 + 9
        assert proxy.count(DOWN) == 300_015
        assert proxy.accepted == 2
        assert proxy.cuts == []


def test_cut_forwards_exactly_up_to_the_threshold_then_accepts_again(
    server: tuple[int, list[int]],
) -> None:
    port, received = server
    with ByteCountingProxy(("127.0.0.1", port)) as proxy:
        proxy.cut_at(UP, 600_004)  # half of a 1.2 MB request, counting its 4-byte header
        with pytest.raises(OSError):
            reply = _request(proxy.port, 1_200_000)  # the server never answers: cut
            if len(reply) < 3_600_000:
                raise ConnectionResetError(f"short reply: {len(reply)} bytes")
        assert received == []
        assert proxy.count(UP) == 600_004
        assert [(c.up, c.down, c.connections) for c in proxy.cuts] == [(600_004, 0, 1)]
        # disarmed after the cut: the retry passes, and is counted on top
        assert len(_request(proxy.port, 1_200_000)) == 3_600_000
        assert received == [1_200_000]
        assert proxy.count(UP) == 600_004 + 1_200_004
        assert proxy.accepted == 2


def test_a_download_cut_counts_the_server_side_bytes(server: tuple[int, list[int]]) -> None:
    port, _ = server
    with ByteCountingProxy(("127.0.0.1", port)) as proxy:
        proxy.cut_at(DOWN, 1_000)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall((10_000).to_bytes(4, "big") + b"q" * 10_000)
            assert len(_read(sock, 30_000)) == 1_000  # then the connection ends
        assert proxy.count(DOWN) == 1_000
        assert len(proxy.cuts) == 1


def test_cut_at_rejects_an_unknown_direction() -> None:
    with ByteCountingProxy(("127.0.0.1", 9)) as proxy, pytest.raises(ValueError, match="sideways"):
        proxy.cut_at("sideways", 10)


def test_a_client_waits_for_a_server_that_starts_after_the_proxy() -> None:
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ByteCountingProxy(("127.0.0.1", port), connect_wait_s=10) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        client.sendall(b"early")  # held by the proxy until the server is up
        time.sleep(0.5)
        with socket.create_server(("127.0.0.1", port)) as listener:
            conn, _ = listener.accept()
            with conn, client:
                assert _read(conn, 5) == b"early"
                conn.sendall(b"late")
                assert _read(client, 4) == b"late"
        assert (proxy.count(UP), proxy.count(DOWN), proxy.accepted) == (5, 4, 1)


def test_a_client_is_closed_when_the_server_never_comes() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ByteCountingProxy(("127.0.0.1", port), connect_wait_s=0.3) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with client:
            assert client.recv(10) == b""  # closed after the wait
        assert proxy.accepted == 0
