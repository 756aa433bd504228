"""Update compression as pure math: each method's wire form, and its checked inverse.

A compressed update is an :class:`~fedcare.records.arrays.ArrayRecord` whose arrays really are
smaller on the wire (the transport sends each array's raw bytes with its dtype):

========  =====================================================  ===========================
method    arrays per parameter array ``name``                    bytes (float32 parameters)
========  =====================================================  ===========================
``fp16``  ``values/name``: float16, the parameter's shape        1/2
``bf16``  ``values/name``: uint16, the upper half of float32     1/2
``int8``  ``values/name``: int8, the shape; ``scale/name``:      about 1/4
          float32 of shape ``()``, ``max|x| / 127``
``topk``  ``indices/name``: uint32, ``k`` flat indices,          about ``2 * ratio``
          ascending; ``values/name``: the parameter dtype, ``k``
========  =====================================================  ===========================

``k = ceil(ratio * size)`` (at least 1) for every non-empty array. Bounds of one round trip
(before error feedback): fp16 ``|err| <= 2^-11 |x| + 2^-25`` (float16's spacing; a value beyond
float16's range 65504 is refused, not clipped); bf16 ``|err| <= 2^-8 |x|`` (round to nearest
even); int8 ``|err| <= scale / 2`` per element; top-k keeps exactly the ``k`` entries of
largest magnitude and zeroes the rest.

numpy has no bfloat16, so bf16 is float32's upper 16 bits in a uint16 array, rounded to
nearest even here (``ml_dtypes.bfloat16`` gives the same bits; it is not a dependency).

:func:`decode` is the coordinator's check of what a site sent: exactly the expected names, each
array's dtype and shape, indices in range and strictly ascending, finite values and scales.
Every failure is a :class:`~fedcare.errors.ValidationError` naming the site and the array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "FP16_MAX",
    "METHODS",
    "bf16_bits",
    "bf16_values",
    "decode",
    "encode",
    "topk_count",
]

#: The compression methods (``none`` is the absence of the layer).
METHODS = ("fp16", "bf16", "int8", "topk")
FP16_MAX = float(np.finfo(np.float16).max)
_INT8_LEVELS = 127


def topk_count(size: int, ratio: float) -> int:
    """How many entries top-k keeps of an array of ``size`` entries: ``ceil(ratio * size)``,
    at least 1 (0 for an empty array)."""
    return 0 if size == 0 else min(size, max(1, math.ceil(ratio * size - 1e-9)))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 bits (uint16) of ``x``, rounded to nearest even."""
    x32 = np.array(x, dtype=np.float32, order="C")
    bits = x32.reshape(-1).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).reshape(x32.shape)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 ``bits`` (uint16)."""
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16
    return wide.reshape(-1).view(np.float32).reshape(wide.shape)


def _encode_one(name: str, x: np.ndarray, method: str, ratio: float) -> dict[str, np.ndarray]:
    if method == "fp16":
        big = float(np.abs(x).max()) if x.size else 0.0
        if big > FP16_MAX:
            raise ValidationError(
                f"update array {name!r} has a value of magnitude {big:.4g}, beyond float16's "
                f"range ({FP16_MAX:g}); compression fp16 cannot send it (bf16 can)"
            )
        return {f"values/{name}": x.astype(np.float16)}
    if method == "bf16":
        return {f"values/{name}": bf16_bits(x)}
    if method == "int8":
        big = float(np.abs(x).max()) if x.size else 0.0
        scale = np.float32(big / _INT8_LEVELS)
        q = np.zeros(x.shape, np.int8) if scale == 0 else np.rint(x / np.float64(scale))
        q = np.clip(q, -_INT8_LEVELS, _INT8_LEVELS).astype(np.int8)
        return {f"values/{name}": q, f"scale/{name}": np.asarray(scale, dtype=np.float32)}
    flat = x.ravel()
    k = topk_count(flat.size, ratio)
    idx = np.sort(np.argpartition(-np.abs(flat), k - 1)[:k]) if k else np.zeros(0, np.int64)
    return {f"indices/{name}": idx.astype(np.uint32), f"values/{name}": flat[idx]}


def encode(arrays: Mapping[str, np.ndarray], method: str, ratio: float = 1.0) -> ArrayRecord:
    """The wire form of ``arrays`` under ``method`` (see the module docstring).

    Raises
    ------
    ValidationError
        For an unknown method, a non-float array, or (fp16) a value beyond float16's range.
    """
    if method not in METHODS:
        raise ValidationError(f"compression method {method!r} is unknown; known: {METHODS}")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        x = np.asarray(value)
        if x.dtype.kind != "f":
            raise ValidationError(f"update array {name!r} has dtype {x.dtype}; expected floats")
        out.update(_encode_one(name, x, method, ratio))
    return ArrayRecord(out, copy=False)


def _expected(template: ArrayRecord, method: str, ratio: float) -> dict[str, tuple[str, tuple]]:
    """name -> (dtype, shape) of every array a correct encoding of ``template`` has."""
    out: dict[str, tuple[str, tuple]] = {}
    for name, t in template.items():
        shape = tuple(t.shape)
        if method == "fp16":
            out[f"values/{name}"] = ("float16", shape)
        elif method == "bf16":
            out[f"values/{name}"] = ("uint16", shape)
        elif method == "int8":
            out[f"values/{name}"] = ("int8", shape)
            out[f"scale/{name}"] = ("float32", ())
        else:
            k = topk_count(t.size, ratio)
            out[f"indices/{name}"] = ("uint32", (k,))
            out[f"values/{name}"] = (t.dtype.name, (k,))
    return out


def _check_form(site: str, got: Mapping[str, np.ndarray], want: dict[str, tuple]) -> None:
    what = f"compressed update from site {site!r}"
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    if missing or extra:
        raise ValidationError(f"{what} has missing arrays {missing} and unexpected {extra}")
    for key, (dtype, shape) in want.items():
        arr = got[key]
        if arr.dtype.name != dtype:
            raise ValidationError(f"{what}: array {key!r} has dtype {arr.dtype}, expected {dtype}")
        if tuple(arr.shape) != shape:
            raise ValidationError(
                f"{what}: array {key!r} has shape {tuple(arr.shape)}, expected {shape}"
            )


def _decode_one(
    site: str, name: str, t: np.ndarray, got: Mapping[str, np.ndarray], method: str
) -> np.ndarray:
    what = f"compressed update from site {site!r}"
    values = got[f"values/{name}"]
    if method == "bf16":
        out = bf16_values(values).reshape(t.shape)
    elif method == "int8":
        scale = float(got[f"scale/{name}"])
        if not (math.isfinite(scale) and scale >= 0):
            raise ValidationError(f"{what}: array 'scale/{name}' is {scale!r}; expected >= 0")
        out = values.astype(np.float64) * scale
    elif method == "topk":
        idx = got[f"indices/{name}"].astype(np.int64)
        if idx.size and (idx.max() >= t.size or np.any(np.diff(idx) <= 0)):
            bad = (
                f"index {int(idx.max())} out of range"
                if idx.max() >= t.size
                else "a repeated or unsorted index"
            )
            raise ValidationError(
                f"{what}: array 'indices/{name}' has {bad} (expected strictly ascending "
                f"indices in [0, {t.size}))"
            )
        flat = np.zeros(t.size, dtype=t.dtype)
        flat[idx] = values
        out = flat.reshape(t.shape)
    else:
        out = values
    if not np.isfinite(out).all():
        raise ValidationError(f"{what}: array 'values/{name}' has NaN or infinite values")
    return np.asarray(out, dtype=t.dtype)


def decode(
    site: str,
    compressed: Mapping[str, np.ndarray],
    template: ArrayRecord,
    method: str,
    ratio: float = 1.0,
) -> ArrayRecord:
    """The update ``compressed`` stands for, shaped and typed like ``template``.

    Raises
    ------
    ValidationError
        Naming ``site`` and the array, when ``compressed`` is not a well-formed encoding of an
        update like ``template`` under ``method``: missing or unexpected arrays, a dtype or
        shape other than the method's, an index out of range or not strictly ascending, a
        negative or non-finite scale, non-finite values.
    """
    if method not in METHODS:
        raise ValidationError(f"compression method {method!r} is unknown; known: {METHODS}")
    _check_form(site, compressed, _expected(template, method, ratio))
    return ArrayRecord(
        {k: _decode_one(site, k, t, compressed, method) for k, t in template.items()}, copy=False
    )
