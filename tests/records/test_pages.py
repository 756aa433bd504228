"""Dropping a mapped array's pages after reading it (fedcare.records.pages)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from fedcare.records.pages import release


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_released_pages_leave_the_process_and_read_back_the_same(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=8 << 20).astype(np.float32)  # 32 MiB
    path = tmp_path / "arrays.bin"
    path.write_bytes(bytes(64) + values.tobytes())
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    arr = np.frombuffer(mm, dtype=np.float32, count=values.size, offset=64)
    before = _rss_file_kb()
    total = float(arr.sum(dtype=np.float64))  # every page read: mapped into the process
    touched = _rss_file_kb()
    assert touched - before > 30_000
    for block in range(0, arr.size, 1 << 20):
        release(arr[block : block + (1 << 20)])
    assert _rss_file_kb() - before < 1_000  # at most the partial pages at the block edges
    assert float(arr.sum(dtype=np.float64)) == total  # read again: the same bytes


def test_release_ignores_ordinary_and_writable_arrays() -> None:
    arr = np.ones(1 << 20)
    release(arr)  # nothing to drop: its memory is its own
    assert arr.sum() == 1 << 20
    mm = mmap.mmap(-1, 1 << 20)
    writable = np.frombuffer(mm, dtype=np.uint8)
    writable[:] = 7
    release(writable)  # a writable map's pages hold data no file has: kept
    assert int(writable.sum()) == 7 << 20
