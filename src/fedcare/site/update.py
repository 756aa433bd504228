"""A site's model update ``trained - start`` without another copy of the model.

A model adapter whose :class:`~fedcare.models.base.FitResult` says ``owned`` hands back new
arrays that nothing else holds (the torch adapter: the trained module's own memory). The
update is then computed into them, in place: for a 400 MB model that is 400 MB less at the
site, and the values are bitwise those of ``trained - start`` (the same float32 ufunc loop).
The trained params are consumed: afterwards the result's record holds the update. Arrays that
cannot take it in place (another dtype would result, memory shared with ``start``, or not
writeable) get a new array, as any adapter's result does. A ``start`` memory-mapped from the
task's file has its pages dropped from the process block by block as they are read.
"""

from __future__ import annotations

import numpy as np

from fedcare.models.base import FitResult
from fedcare.records.arrays import ArrayRecord
from fedcare.records.pages import release_pages

#: Elements subtracted at a time (so a mapped ``start`` is dropped as it is read).
BLOCK = 1 << 21

__all__ = ["consume_update"]


def _subtract_into(arr: np.ndarray, other: np.ndarray) -> bool:
    """``arr -= other`` on a read-only view of a private writeable array; False if it cannot."""
    if np.result_type(arr.dtype, other.dtype) != arr.dtype or np.may_share_memory(arr, other):
        return False
    try:
        arr.flags.writeable = True
    except ValueError:  # its memory is not ours to write
        return False
    try:
        if arr.flags.c_contiguous and other.flags.c_contiguous and arr.shape == other.shape:
            flat, start = arr.reshape(-1), other.reshape(-1)
            for at in range(0, flat.size, BLOCK):  # the same ufunc loop, block by block
                part = slice(at, min(at + BLOCK, flat.size))
                np.subtract(flat[part], start[part], out=flat[part])
                release_pages(start, part)  # a mapped task's pages leave the process
        else:
            np.subtract(arr, other, out=arr)
    finally:
        arr.flags.writeable = False
    return True


def consume_update(result: FitResult, start: ArrayRecord) -> ArrayRecord:
    """``result.params - start``, computed into ``result.params`` when the result is owned.

    Parameters
    ----------
    result:
        What the adapter's ``fit`` returned; its params must not be used afterwards.
    start:
        The params training started from (not changed).

    Returns
    -------
    ArrayRecord
        The update, array by array in ``result.params``' order.

    Raises
    ------
    ValidationError
        When the trained params do not have ``start``'s names and shapes.
    """
    trained = result.params
    if not result.owned:
        return trained - start
    trained.check_structure(start, what="operand")
    out: dict[str, np.ndarray] = {}
    for k in trained:
        arr, other = trained[k], np.asarray(start[k])
        out[k] = arr if _subtract_into(arr, other) else arr - other
    return ArrayRecord(out, copy=False)
