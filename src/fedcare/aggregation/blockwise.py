"""Blockwise passes over large arrays, so aggregation needs bounded temporaries.

A 100M-parameter float32 model is 400 MB; one full-size float64 temporary of its largest layer
is as large as the model. The common path (:class:`~fedcare.aggregation.mean.WeightedMean`,
:class:`~fedcare.aggregation.validate.ValidateUpdates`, the plain server SGD step) therefore
walks every array in flat blocks of :data:`BLOCK` elements: each temporary is one block, and
each element goes through exactly the same floating-point operations as the whole-array
expression it replaces (``+``, ``*``, ``/`` and casts are correctly rounded element by element,
so the result is bitwise the same; only reductions, such as a norm, depend on blocking).

Replies may arrive as read-only arrays memory-mapped from files. Reading such an array maps its
pages into the process, and they count in its resident memory until the mapping goes away.
:func:`release_pages` tells the kernel that the pages of a block already read are not needed
any more (``MADV_DONTNEED``): a read-only file mapping then re-reads them from the page cache if
they are touched again, so the result is unchanged, and one reply costs about one block of
resident memory however large it is. It does nothing for arrays that are not backed by a
read-only ``mmap`` (ordinary arrays, copy-on-write maps whose private pages must be kept).

An accumulator made by :func:`zeros` lives in its own anonymous mapping, so the pages of the
blocks already converted to the result can be handed back (:func:`discard`) while the rest is
converted: the float64 sums shrink as the result grows, instead of both being whole at once.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from fedcare.records.arrays import surely_finite
from fedcare.records.pages import SharedFileMap, mmap_of, offset_in, release_pages

__all__ = [
    "BLOCK",
    "NORM_PIECE",
    "Scratch",
    "all_finite",
    "blocks",
    "discard",
    "discard_after",
    "flat",
    "norm",
    "offload",
    "owns_mapping",
    "release_pages",
    "spill_to",
    "sq_norm",
    "zeros",
]

#: Elements per block: a float64 temporary of one block is 16 MiB.
BLOCK = 1 << 21

#: Elements per piece of a norm (:func:`sq_norm`): a widened float64 piece is 256 KiB, so it is
#: still in the CPU's cache when its dot product reads it.
NORM_PIECE = 1 << 15

#: Reusable buffers by dtype (see :func:`sq_norm`): one block of each at most.
Scratch = dict[np.dtype, np.ndarray]


def flat(arr: np.ndarray) -> np.ndarray:
    """A 1-D view of ``arr`` in C order (a copy only when ``arr`` is not C-contiguous)."""
    return arr.reshape(-1)


def blocks(size: int, block: int = BLOCK) -> Iterator[slice]:
    """Consecutive slices covering ``range(size)``, each at most ``block`` long."""
    for start in range(0, size, block):
        yield slice(start, min(start + block, size))


class _Spill(SharedFileMap):
    """A shared mapping of an unlinked file under the spill folder (see :func:`spill_to`)."""


_spill: tuple[Path, int] | None = None


def spill_to(folder: Path | None, *, above_bytes: int = 0) -> None:
    """Keep accumulators larger than ``above_bytes`` on disk, memory-mapped, in ``folder``.

    The process-wide memory budget (``fedcare coordinator start --memory-budget-mb``): such an
    accumulator is a shared mapping of an unlinked file, and each block is dropped from the
    process once it has been added to (:func:`offload`), so its memory is the kernel's page
    cache, which the kernel writes to disk and takes back under pressure, not the
    coordinator's. ``None`` keeps every accumulator in memory (the default).
    """
    global _spill
    if folder is not None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _spill = None if folder is None else (folder, max(0, above_bytes))


def _spilled(size: int) -> np.ndarray | None:
    spill = _spill
    if spill is None or size * 8 <= spill[1]:
        return None
    fd, name = tempfile.mkstemp(dir=spill[0], prefix="sums-")
    try:
        os.unlink(name)  # gone with the mapping, also after a crash
        os.ftruncate(fd, size * 8)
        mm = _Spill(fd, size * 8, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)
    return np.frombuffer(mm, dtype=np.float64)


def offload(arr: np.ndarray, part: slice) -> None:
    """Drop the written block ``arr[part]`` of a spilled accumulator from this process (its
    data stays in the file's page cache); does nothing for any other array."""
    mm = mmap_of(arr)
    if not isinstance(mm, _Spill) or arr.ndim != 1 or part.stop <= part.start:
        return
    at = offset_in(mm, arr)
    lo, hi = at + part.start * 8, at + part.stop * 8
    lo -= lo % mmap.PAGESIZE
    if hi < len(mm):
        hi -= hi % mmap.PAGESIZE  # a page shared with the next block goes with that block
    if lo < hi:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def zeros(size: int, *, populate: bool = False) -> np.ndarray:
    """A 1-D float64 array of zeros in its own anonymous mapping (see :func:`discard`), or in
    a spilled file when it is larger than the memory budget allows (:func:`spill_to`).

    The pages are the kernel's zero pages until written, and go back to the system when the
    array is freed. With ``populate`` (for an array about to be written whole) the kernel
    gives them all at once (``MAP_POPULATE``): one call instead of a fault per page, which
    made the first write of 1M values cost 5.6 instead of 1.8 ms.
    """
    if size == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return np.zeros(size, dtype=np.float64)
    spilled = _spilled(size)
    if spilled is not None:
        return spilled
    flags = mmap.MAP_PRIVATE | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    private = mmap.mmap(-1, size * 8, flags=flags)  # shared memory would stay
    return np.frombuffer(private, dtype=np.float64)


def discard(arr: np.ndarray, part: slice) -> None:
    """Hand the pages holding ``arr[:part.stop]`` back to the system (``arr`` from
    :func:`zeros`); the whole pages of ``arr[part]`` read as zeros afterwards.

    For blocks taken in order: a page shared with the next block is kept, and handed back
    with that block. Does nothing for other arrays.
    """
    mm = mmap_of(arr)
    if mm is None or memoryview(mm).readonly or arr.ndim != 1 or arr.strides[0] != 8:
        return
    at = offset_in(mm, arr)
    lo = at + part.start * 8
    hi = at + part.stop * 8
    lo -= lo % mmap.PAGESIZE
    hi -= hi % mmap.PAGESIZE
    if 0 <= lo < hi <= len(mm):
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def owns_mapping(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a whole, writeable 1-D float64 mapping of its own (from :func:`zeros`,
    in memory or spilled), whose pages :func:`discard_after` can hand back."""
    mm = mmap_of(arr)
    return (
        mm is not None
        and not memoryview(mm).readonly
        and arr.ndim == 1
        and arr.strides[0] == 8
        and offset_in(mm, arr) == 0
        and arr.nbytes == len(mm)
    )


def discard_after(arr: np.ndarray, used: int) -> None:
    """Hand back the whole pages of ``arr``'s mapping (:func:`owns_mapping`) past its first
    ``used`` bytes, whose content is no longer needed."""
    if not owns_mapping(arr):
        return
    mm = mmap_of(arr)
    assert mm is not None
    lo = used + (-used % mmap.PAGESIZE)
    if lo < len(mm):
        mm.madvise(mmap.MADV_DONTNEED, lo, len(mm) - lo)


def all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()`` with a boolean temporary of one block (none for a float32 or
    float64 block whose sum of squares is finite: :func:`~fedcare.records.arrays.surely_finite`).
    """
    if not np.issubdtype(arr.dtype, np.inexact):
        return True
    values = flat(arr)
    for part in blocks(values.size):
        block = values[part]
        ok = surely_finite(block) or bool(np.isfinite(block).all())
        release_pages(values, part)
        if not ok:
            return False
    return True


def sq_norm(arr: np.ndarray, scratch: Scratch | None = None) -> float:
    """The squared L2 norm of ``arr``, summed in float64 piece by piece.

    More accurate than a float32 dot product over the whole array, and not bitwise the same
    as :meth:`fedcare.records.arrays.ArrayRecord.sq_norm` (a reduction depends on its order).
    Each piece of :data:`NORM_PIECE` elements is widened to float64 and its dot product taken
    while the widened piece is still in the CPU's cache; the pieces' sums are added in float64.
    That reads the array once from memory instead of also writing and re-reading a widened
    block (0.36 instead of 0.81 ms for 1M float32 values on the 2-core machine). With
    ``scratch`` (kept by the caller between arrays), every piece is widened into one reused
    buffer instead of a new temporary: the same values, so the same result, without allocating.
    A result that is finite implies every element of ``arr`` is finite (a NaN or an infinity
    makes the sum NaN or infinite), so a caller that needs the norm anyway can skip a
    separate :func:`all_finite` pass unless the sum is not finite.
    """
    values = flat(arr)
    wide = np.dtype(np.complex128 if np.iscomplexobj(values) else np.float64)
    scratch = {} if scratch is None else scratch  # one buffer for this call's pieces
    total = 0.0
    for part in blocks(values.size):
        for at in range(part.start, part.stop, NORM_PIECE):
            piece = _widened(values[at : min(at + NORM_PIECE, part.stop)], wide, scratch)
            total += float(np.vdot(piece, piece).real)
        release_pages(values, part)
    return total


def norm(arrays: Mapping[str, np.ndarray], scratch: Scratch | None = None) -> float:
    """The L2 norm of all of ``arrays`` together, by :func:`sq_norm` (float64 sums)."""
    return float(np.sqrt(sum(sq_norm(v, scratch) for v in arrays.values())))


def _widened(values: np.ndarray, wide: np.dtype, scratch: Scratch | None) -> np.ndarray:
    """``np.asarray(values, dtype=wide)``, written into ``scratch``'s buffer when given."""
    if scratch is None or values.dtype == wide:
        return np.asarray(values, dtype=wide)
    buffer = scratch.get(wide)
    if buffer is None or buffer.size < values.size:
        buffer = scratch[wide] = np.empty(max(values.size, 1), dtype=wide)
    out = buffer[: values.size]
    out[...] = values  # the same conversion as np.asarray (exact widening for floats)
    return out
