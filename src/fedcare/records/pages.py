"""Dropping the pages of a memory-mapped array once they have been read.

Tasks and replies are read as views of memory-mapped files (``fedcare.transport.framed``):
reading an array maps its pages into the process, and they count in its resident memory until
the mapping goes away, which for a reply being summed is after its last array. A consumer
that reads an array once, in blocks (the streaming mean), calls :func:`release` on each block
it has used: ``madvise(MADV_DONTNEED)`` drops those pages from this process (the kernel's page
cache keeps them; reading the block again maps them again, with the same bytes), so a reply
costs one block of memory instead of its whole size. For anything but a read-only view of an
``mmap.mmap`` (an ordinary array, a writable map) :func:`release` does nothing.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

__all__ = ["release"]

_PAGE = mmap.PAGESIZE


def _backing_map(arr: np.ndarray) -> mmap.mmap | None:
    base: Any = arr
    for _ in range(16):  # views of views of a memoryview of the map
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if base is None:
            return None
    return None


def release(arr: np.ndarray) -> None:
    """Drop the whole pages under ``arr`` (a contiguous read-only view of a map) from memory."""
    if arr.flags.writeable or not arr.flags.c_contiguous or arr.nbytes < _PAGE:
        return
    mm = _backing_map(arr)
    if mm is None or not hasattr(mm, "madvise"):
        return
    origin = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
    start = arr.__array_interface__["data"][0] - origin
    first = -(-start // _PAGE) * _PAGE  # whole pages inside the array only
    last = (start + arr.nbytes) // _PAGE * _PAGE
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)
