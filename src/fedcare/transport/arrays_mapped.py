"""An ``ArraysMessage`` read in place: its arrays are views of the buffer, nothing is copied.

:func:`fedcare.transport.arrays_wire.decode_arrays` parses a stored checkpoint with protobuf,
which copies every array's bytes (and needs the whole message as ``bytes`` first): reading a
400 MB model costs 800 MB. :func:`read_arrays` walks the same protobuf wire format itself,
over any buffer (a memory map of the artifact), and hands out read-only ``np.frombuffer``
views, checked exactly as :func:`~fedcare.transport.arrays_wire.decode_arrays` checks them
(message version, end marker, dtype allow-list, dimensions, names, sizes, bool bytes, finite
values if the limits say so). It accepts what protobuf writes for this schema: fields in any
order, ``shape`` packed or not; an unknown field is refused (these messages have none).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION
from fedcare.transport.arrays_wire import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    END_MARKER,
    Limits,
    _check_name,
)

__all__ = ["read_arrays"]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _Reader:
    def __init__(self, buf: Any, start: int, end: int) -> None:
        self.buf, self.at, self.end = buf, start, end

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.at >= self.end or shift > 63:
                raise ValidationError("array record is truncated or corrupted (a varint)")
            byte = self.buf[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def field(self) -> tuple[int, int]:
        key = self.varint()
        return key >> 3, key & 7

    def span(self) -> tuple[int, int]:
        n = self.varint()
        if self.at + n > self.end:
            raise ValidationError("array record is truncated (a field runs past its end)")
        start = self.at
        self.at += n
        return start, self.at

    def fixed32(self) -> int:
        if self.at + 4 > self.end:
            raise ValidationError("array record is truncated (its end marker)")
        value = int.from_bytes(bytes(self.buf[self.at : self.at + 4]), "little")
        self.at += 4
        return value


def _unknown(number: int, wire: int, where: str) -> ValidationError:
    return ValidationError(f"{where} has an unknown field {number} (wire type {wire})")


def _array(buf: Any, start: int, end: int, limits: Limits) -> tuple[str, np.ndarray]:
    r = _Reader(buf, start, end)
    name, dtype_name, shape, data = "", "", [], (0, 0)
    while r.at < r.end:
        number, wire = r.field()
        if number in (1, 2, 4) and wire == _LEN:
            lo, hi = r.span()
            if number == 4:
                data = (lo, hi)
            else:
                text = bytes(buf[lo:hi]).decode("utf-8", errors="strict")
                name, dtype_name = (text, dtype_name) if number == 1 else (name, text)
        elif number == 3 and wire == _LEN:  # packed
            lo, hi = r.span()
            inner = _Reader(buf, lo, hi)
            while inner.at < inner.end:
                shape.append(inner.varint())
        elif number == 3 and wire == _VARINT:
            shape.append(r.varint())
        else:
            raise _unknown(number, wire, "array")
    _check_name(name, "array record array name", limits)
    what = f"array record array {name!r}"
    if dtype_name not in ALLOWED_DTYPES:
        raise ValidationError(
            f"{what} has dtype {dtype_name!r}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
        )
    dims = tuple(d - (1 << 64) if d >= 1 << 63 else d for d in shape)  # int64
    if len(dims) > limits.max_ndim:
        raise ValidationError(f"{what} has {len(dims)} dimensions, above {limits.max_ndim}")
    if any(d < 0 for d in dims):
        raise ValidationError(f"{what} has a negative dimension in shape {dims}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    count = math.prod(dims)
    if count * dtype.itemsize != data[1] - data[0]:
        raise ValidationError(
            f"{what} has shape {dims} and dtype {dtype_name} ({count * dtype.itemsize} bytes) "
            f"but carries {data[1] - data[0]} bytes"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=data[0]).reshape(dims)
    if dtype.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        raise ValidationError(f"{what} has dtype bool but bytes other than 0 and 1")
    if not dtype.isnative:  # pragma: no cover - big-endian hosts only
        arr = arr.astype(dtype.newbyteorder("="))
    if limits.require_finite and dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValidationError(f"{what} has NaN or infinite values")
    return name, arr


def read_arrays(buffer: Any, *, limits: Limits = DEFAULT_LIMITS) -> ArrayRecord:
    """The :class:`ArrayRecord` in an ``ArraysMessage`` ``buffer``, as views of it.

    Raises
    ------
    ValidationError
        As :func:`~fedcare.transport.arrays_wire.decode_arrays` does, naming what is wrong.
    """
    size = len(buffer)
    if not size:
        raise ValidationError("array record is empty (0 bytes)")
    r = _Reader(buffer, 0, size)
    version, end, record = 0, None, (0, 0)
    while r.at < r.end:
        number, wire = r.field()
        if number == 1 and wire == _VARINT:
            version = r.varint()
        elif number == 2 and wire == _LEN:
            record = r.span()
        elif number == 100 and wire == _FIXED32:
            end = r.fixed32()
        else:
            raise _unknown(number, wire, "array record")
    if version != MESSAGE_VERSION:
        raise ValidationError(
            f"array record has message version {version}; this fedcare understands "
            f"{MESSAGE_VERSION}"
        )
    if end != END_MARKER:
        raise ValidationError("array record lacks its end marker; it is truncated")
    arrays: dict[str, np.ndarray] = {}
    inner = _Reader(buffer, *record)
    while inner.at < inner.end:
        number, wire = inner.field()
        if number != 1 or wire != _LEN:
            raise _unknown(number, wire, "array record's record")
        name, arr = _array(buffer, *inner.span(), limits)
        if name in arrays:
            raise ValidationError(f"array record has two arrays named {name!r}")
        arrays[name] = arr
        if len(arrays) > limits.max_arrays:
            raise ValidationError(
                f"array record has more than {limits.max_arrays} arrays, above the limit"
            )
    return ArrayRecord(arrays, copy=False)
