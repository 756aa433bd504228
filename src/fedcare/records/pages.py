"""Dropping the pages of a memory-mapped array once they have been read.

Tasks and replies are read as views of memory-mapped files (``fedcare.transport.framed``):
reading an array maps its pages into the process, and they count in its resident memory until
the mapping goes away. A consumer that reads an array once, in blocks (the streaming mean, a
payload being written or hashed), calls :func:`release_pages` on each block it has used:
``madvise(MADV_DONTNEED)`` drops those pages from this process (the kernel's page cache keeps
them; reading the block again maps them again, with the same bytes), so a reply costs one block
of memory instead of its whole size. The same holds for a :class:`SharedFileMap`, a writable
shared mapping of a file (the coordinator's memory budget keeps large sums and the model they
become in one): what was written is in the page cache and goes to the file, so dropping its
pages loses nothing. For anything else (an ordinary array, an anonymous or copy-on-write map,
whose pages hold data no file has) it does nothing.
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["SharedFileMap", "mmap_of", "offset_in", "release_all", "release_pages"]


class SharedFileMap(mmap.mmap):
    """A writable ``MAP_SHARED`` mapping of a file: its pages can leave the process at any time
    (:func:`release_pages`), their data stays in the file."""


def mmap_of(arr: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` whose memory ``arr`` views, if any."""
    base: object = arr
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return None


def _droppable_mmap(arr: np.ndarray) -> mmap.mmap | None:
    """The read-only ``mmap`` (or :class:`SharedFileMap`) whose memory ``arr`` views, if any."""
    mm = mmap_of(arr)
    try:
        keep = isinstance(mm, SharedFileMap) or (mm is not None and memoryview(mm).readonly)
        return mm if keep else None
    except ValueError:  # closed
        return None


def offset_in(mm: mmap.mmap, arr: np.ndarray) -> int:
    """Where ``arr``'s first element lies in ``mm``, in bytes."""
    origin = np.frombuffer(mm, dtype=np.uint8)
    start = int(origin.__array_interface__["data"][0])
    del origin
    return int(arr.__array_interface__["data"][0]) - start


def release_pages(arr: np.ndarray, part: slice) -> None:
    """Drop from this process the mapped file pages of ``arr[part]`` (1-D ``arr``), if any.

    Best effort and invisible to readers: only for arrays viewing a read-only ``mmap`` or a
    :class:`SharedFileMap`, whose pages come back from the page cache when touched again.
    Elsewhere it does nothing.
    """
    if not hasattr(mmap, "MADV_DONTNEED") or arr.ndim != 1 or part.stop <= part.start:
        return
    mm = _droppable_mmap(arr)
    if mm is None:
        return
    first = offset_in(mm, arr) + part.start * arr.strides[0]
    last = first + (part.stop - part.start) * arr.strides[0]
    lo, hi = sorted((first, last))
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), hi)
    if 0 <= lo < hi:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def release_all(arr: np.ndarray) -> None:
    """:func:`release_pages` over the whole of a C-contiguous ``arr`` of any shape."""
    if arr.size and arr.flags.c_contiguous:
        release_pages(arr.reshape(-1), slice(0, arr.size))
