"""Array records on the wire: protobuf messages, the decoding limits, and checkpoints.

The shared base of :mod:`fedcare.transport.codec`: numeric arrays travel as raw little-endian
bytes with a dtype name from a fixed allow-list and a shape, inside protobuf messages that end
with a fixed marker (so truncation is detected). Everything is checked against :class:`Limits`
before a record is built; every failure is a :class:`~fedcare.errors.ValidationError` naming
the field and the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, EncodeError, Message

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_LIMITS",
    "END_MARKER",
    "EncodedParts",
    "Limits",
    "decode_arrays",
    "encode_arrays",
    "encode_arrays_parts",
]

MiB = 1 << 20
#: Largest message protobuf can serialize or parse (2 GiB - 1 byte).
PROTOBUF_MAX_BYTES = (1 << 31) - 1
#: Value of the ``end`` field every message carries; written last, so truncation removes it.
END_MARKER = 0xFEDCA7E1
ALLOWED_DTYPES: frozenset[str] = frozenset(
    ["bool", "float16", "float32", "float64"]
    + [f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)]
)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces before it builds anything.

    Attributes
    ----------
    max_payload_bytes:
        Largest serialized message (and largest chunked transfer). Default 2 GiB - 1, the
        protobuf limit.
    max_arrays:
        Most arrays in one message, over all its records.
    max_records:
        Most named extra records in one task.
    max_ndim:
        Most dimensions of one array.
    max_name_chars:
        Longest array, record, config or metric name, study or site id.
    max_entries:
        Most config entries (task) or metrics (reply).
    max_json_chars:
        Longest plan or pipeline JSON text.
    require_finite:
        Refuse NaN and infinite values in float arrays.
    max_framed_bytes:
        Largest framed payload (:mod:`fedcare.transport.framed`), which protobuf's 2 GiB
        limit does not bound: default 1 TiB; a coordinator bounds each reply by its task.
    """

    max_payload_bytes: int = PROTOBUF_MAX_BYTES
    max_arrays: int = 100_000
    max_records: int = 64
    max_ndim: int = 32
    max_name_chars: int = 256
    max_entries: int = 10_000
    max_json_chars: int = 16 * MiB
    require_finite: bool = False
    max_framed_bytes: int = 1 << 40


DEFAULT_LIMITS = Limits()


# Arrays -------------------------------------------------------------------------------------
def _array_to_proto(name: str, arr: np.ndarray, out: pb.Array) -> None:
    if arr.dtype.name not in ALLOWED_DTYPES or arr.dtype.kind not in "biuf":
        raise ValidationError(
            f"array {name!r} has dtype {arr.dtype}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
        )
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    out.name = name
    out.dtype = arr.dtype.name
    out.shape.extend(int(d) for d in arr.shape)
    out.data = little.tobytes(order="C")


def _record_to_proto(record: ArrayRecord, out: pb.ArrayRecord) -> None:
    for name, arr in record.items():
        _array_to_proto(name, arr, out.arrays.add())


def _check_name(value: str, what: str, limits: Limits) -> str:
    if not value:
        raise ValidationError(f"{what} must be a non-empty string")
    if len(value) > limits.max_name_chars:
        raise ValidationError(
            f"{what} {value[:40]!r}... has {len(value)} characters, "
            f"above the limit {limits.max_name_chars}"
        )
    return value


def _array_from_proto(a: pb.Array, limits: Limits, where: str) -> np.ndarray:
    what = f"{where} array {a.name!r}"
    if a.dtype not in ALLOWED_DTYPES:
        raise ValidationError(
            f"{what} has dtype {a.dtype!r}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
        )
    shape = tuple(int(d) for d in a.shape)
    if len(shape) > limits.max_ndim:
        raise ValidationError(f"{what} has {len(shape)} dimensions, above {limits.max_ndim}")
    if any(d < 0 for d in shape):
        raise ValidationError(f"{what} has a negative dimension in shape {shape}")
    dtype = np.dtype(a.dtype).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    data = a.data
    if expected != len(data):
        raise ValidationError(
            f"{what} has shape {shape} and dtype {a.dtype} ({expected} bytes) "
            f"but carries {len(data)} bytes"
        )
    if dtype.kind == "b" and data and np.frombuffer(data, dtype=np.uint8).max() > 1:
        raise ValidationError(f"{what} has dtype bool but bytes other than 0 and 1")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    if limits.require_finite and dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValidationError(f"{what} has NaN or infinite values")
    return arr


def _record_from_proto(msg: pb.ArrayRecord, limits: Limits, where: str) -> ArrayRecord:
    arrays: dict[str, np.ndarray] = {}
    for a in msg.arrays:
        _check_name(a.name, f"{where} array name", limits)
        if a.name in arrays:
            raise ValidationError(f"{where} has two arrays named {a.name!r}")
        arrays[a.name] = _array_from_proto(a, limits, where)
    return ArrayRecord(arrays, copy=False)


def _count_arrays(records: Iterable[pb.ArrayRecord], limits: Limits, where: str) -> None:
    n = sum(len(r.arrays) for r in records)
    if n > limits.max_arrays:
        raise ValidationError(f"{where} has {n} arrays, above the limit {limits.max_arrays}")


# Framing ------------------------------------------------------------------------------------
def _check_size(records: Iterable[ArrayRecord], what: str) -> None:
    size = sum(r.nbytes for r in records)
    if size > PROTOBUF_MAX_BYTES:
        raise ValidationError(
            f"{what} holds {size} bytes of arrays, above the protobuf limit {PROTOBUF_MAX_BYTES}"
        )


def _serialize(msg: Message, what: str) -> bytes:
    # ByteSize() would cost a full extra pass in upb; the array bytes were checked up front.
    try:
        data = msg.SerializeToString()
    except (ValueError, EncodeError) as err:
        raise ValidationError(f"{what} cannot be serialized: {err}") from None
    if len(data) > PROTOBUF_MAX_BYTES:
        raise ValidationError(
            f"{what} serializes to {len(data)} bytes, above the limit {PROTOBUF_MAX_BYTES}"
        )
    return data


def _parse(cls: type[M], data: bytes, what: str, limits: Limits) -> M:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > limits.max_payload_bytes:
        raise ValidationError(
            f"{what} is {len(data)} bytes, above the limit {limits.max_payload_bytes}"
        )
    if not data:
        raise ValidationError(f"{what} is empty (0 bytes)")
    try:
        msg = cls.FromString(bytes(data))
    except DecodeError as err:
        raise ValidationError(
            f"{what} is not a valid protobuf message ({err}); it is truncated or corrupted"
        ) from None
    version = msg.version  # type: ignore[attr-defined]
    if version != MESSAGE_VERSION:
        raise ValidationError(
            f"{what} has message version {version}; this fedcare understands {MESSAGE_VERSION}"
        )
    if msg.end != END_MARKER:  # type: ignore[attr-defined]
        raise ValidationError(f"{what} lacks its end marker; it is truncated")
    return msg


# Array records alone --------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class EncodedParts:
    """The bytes of :func:`encode_arrays` as parts (headers and views of the arrays), for
    writing a large record without a serialized copy; joined, they equal its output."""

    parts: tuple[bytes | memoryview, ...]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)


def encode_arrays_parts(record: ArrayRecord) -> EncodedParts:
    """:func:`encode_arrays`, byte for byte, as parts that view the arrays' memory.

    Written by hand in protobuf's wire format, in field-number order as protobuf writes it:
    ``version`` (1), ``record`` (2: each ``Array`` as field 1, its ``data`` field 4 last),
    ``end`` (100, fixed32); a test checks the equality. A record beyond protobuf's 2 GiB
    (a model of more than 500M float32 parameters) is written in the same wire format:
    :func:`~fedcare.transport.arrays_mapped.read_arrays` reads it, protobuf's parser
    (:func:`decode_arrays`) refuses it by its size.
    """
    arrays: list[tuple[bytes, memoryview]] = []
    for name, arr in record.items():
        if arr.dtype.name not in ALLOWED_DTYPES or arr.dtype.kind not in "biuf":
            raise ValidationError(
                f"array {name!r} has dtype {arr.dtype}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
            )
        head = pb.Array(name=name, dtype=arr.dtype.name, shape=[int(d) for d in arr.shape])
        little = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
        data = memoryview(little.reshape(-1)).cast("B") if little.size else memoryview(b"")  # type: ignore[arg-type]
        head_bytes = head.SerializeToString()
        if len(data):
            head_bytes += b"\x22" + _varint(len(data))
        arrays.append((head_bytes, data))
    parts: list[bytes | memoryview] = [b"\x08" + _varint(MESSAGE_VERSION)]
    body = sum(len(h) + len(d) for h, d in arrays)
    inner = sum(1 + len(_varint(len(h) + len(d))) for h, d in arrays) + body
    if arrays:
        parts.append(b"\x12" + _varint(inner))
        for head_bytes, data in arrays:
            parts.append(b"\x0a" + _varint(len(head_bytes) + len(data)) + head_bytes)
            if len(data):
                parts.append(data)
    parts.append(b"\xa5\x06" + END_MARKER.to_bytes(4, "little"))
    return EncodedParts(tuple(parts))


def encode_arrays(record: ArrayRecord) -> bytes:
    """Serialize one :class:`ArrayRecord` (e.g. a checkpoint) as an ``ArraysMessage``."""
    _check_size([record], "array record")
    msg = pb.ArraysMessage(version=MESSAGE_VERSION, end=END_MARKER)
    _record_to_proto(record, msg.record)
    return _serialize(msg, "array record")


def decode_arrays(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> ArrayRecord:
    """Parse and validate the output of :func:`encode_arrays`.

    Raises
    ------
    ValidationError
        If the bytes are malformed, truncated, of another version or break ``limits``.
    """
    msg = _parse(pb.ArraysMessage, data, "array record", limits)
    _count_arrays([msg.record], limits, "array record")
    return _record_from_proto(msg.record, limits, "array record")
