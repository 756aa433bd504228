"""Dropping mapped pages: read-only maps and shared file maps lose nothing, others are left."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from fedcare.records.pages import SharedFileMap, release_all, release_pages

MB = 1 << 20


def _resident_kb(arr: np.ndarray) -> int:
    """Resident pages of the process's mapping holding ``arr`` (from /proc/self/smaps)."""
    start = arr.__array_interface__["data"][0]
    block: list[str] = []
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            block = [line] if lo <= start < hi else []
        elif block and line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("no mapping holds the array")


def _shared_file_map(path: Path, size: int) -> SharedFileMap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
        return SharedFileMap(fd, size, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)


def test_a_shared_file_maps_pages_leave_the_process_and_keep_their_data(tmp_path: Path) -> None:
    arr = np.frombuffer(_shared_file_map(tmp_path / "f", 32 * MB), dtype=np.float32)
    arr[:] = np.arange(arr.size, dtype=np.float32)
    assert _resident_kb(arr) >= 32 * 1024 - 8
    release_pages(arr, slice(0, arr.size // 2))
    assert _resident_kb(arr) <= 16 * 1024 + 8  # the first half left the process
    release_all(arr)
    assert _resident_kb(arr) <= 8
    assert np.array_equal(arr, np.arange(arr.size, dtype=np.float32))  # read back from the file


def test_anonymous_and_private_memory_is_left_alone() -> None:
    private = np.frombuffer(mmap.mmap(-1, 4 * MB, flags=mmap.MAP_PRIVATE), dtype=np.float64)
    private[:] = 7.0
    release_all(private)
    assert np.all(private == 7.0)
    ordinary = np.full(MB, 3.0)
    release_all(ordinary)
    assert np.all(ordinary == 3.0)
