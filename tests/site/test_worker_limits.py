"""The site policy's memory limit, applied in the worker subprocess."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection

from fedcare.site.worker import _limit_memory


def _allocate(conn: Connection, limit_mb: int | None, size_mb: int) -> None:
    _limit_memory(limit_mb)
    try:
        block = bytearray(size_mb * 1024 * 1024)
        conn.send(f"allocated {len(block)}")
    except MemoryError:
        conn.send("MemoryError")


def _run(limit_mb: int | None, size_mb: int) -> str:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_allocate, args=(child, limit_mb, size_mb))
    proc.start()
    answer = str(parent.recv()) if parent.poll(60) else "no answer"
    proc.join(10)
    return answer


def test_a_worker_cannot_allocate_past_the_memory_limit() -> None:
    assert _run(1024, 2048) == "MemoryError"
    assert _run(None, 64).startswith("allocated")
