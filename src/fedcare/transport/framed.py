"""Framed payloads: a task or reply as a small header and its arrays' raw bytes, never joined.

The whole-message encoding (:mod:`fedcare.transport.codec`) puts every array's bytes inside
one protobuf message, so sending a model costs a serialized copy, receiving it a joined copy
and a parsed copy. A *framed* payload keeps the same ``TaskMessage`` / ``ReplyMessage`` as a
header, with each ``Array`` carrying its name, dtype and shape but no data, and puts the data
after it::

    b"FCF1" | u32 header length (little-endian) | header | pad to 64
    | array 0 bytes | pad to 64 | array 1 bytes | pad to 64 | ...

in the header's order (task: ``params``, then each named record; reply: ``arrays``). Each
array is C-order little-endian, exactly ``prod(shape) * itemsize`` bytes, at a 64-byte-aligned
offset, so a reader maps the payload from disk and hands out ``np.frombuffer`` views of it:
nothing is copied, and a reply that is only summed is read from the page cache once.

:func:`frame_task` / :func:`frame_reply` return a :class:`Framed`: the header bytes and
zero-copy views of the arrays, written (:meth:`Framed.write`) or streamed
(:meth:`Framed.parts`) part by part; an array that is itself a view of a mapped payload has
its pages dropped from the process once it has been passed (:mod:`fedcare.records.pages`), so
re-framing a mapped reply costs no more memory than a block.

:func:`read_task` / :func:`read_reply` take bytes, a memory map or a file path, accept the
whole-message encoding too (a site one protocol minor behind sends it), and check everything
:mod:`~fedcare.transport.codec` checks, plus the exact payload size and zero padding, before
building a record; every failure is a :class:`~fedcare.errors.ValidationError` naming the
field.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from google.protobuf.message import DecodeError

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION, Reply, Task
from fedcare.records.pages import release_all, release_pages
from fedcare.transport.arrays_wire import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    END_MARKER,
    Limits,
    _check_name,
)
from fedcare.transport.codec import (
    decode_reply,
    decode_task,
    reply_from_message,
    reply_message,
    task_from_message,
    task_message,
)
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = [
    "ALIGN",
    "MAGIC",
    "Framed",
    "arrays_offset",
    "frame_reply",
    "frame_task",
    "is_framed",
    "map_file",
    "read_reply",
    "read_task",
]

MAGIC = b"FCF1"
ALIGN = 64
_PREFIX = struct.Struct("<4sI")
#: Largest header (plan and pipeline JSON, names, shapes); the arrays' bytes are not in it.
MAX_HEADER_BYTES = 64 << 20
#: Elements checked at a time (finite values, bool bytes): bounds the temporaries.
CHECK_BLOCK = 1 << 22
_ZEROS = bytes(ALIGN)

Source = bytes | bytearray | memoryview | mmap.mmap | str | os.PathLike[str]


def _pad(n: int) -> int:
    return -n % ALIGN


@dataclass(frozen=True)
class Framed:
    """A payload ready to go: the header and a view of each array's bytes, in order."""

    header: bytes
    arrays: tuple[memoryview, ...]
    #: The arrays the views are of: the pages of a mapped one are dropped once it is passed.
    sources: tuple[np.ndarray, ...] = ()
    #: The task or reply framed (immutable): its digest, once computed, is remembered for it.
    owner: Any = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """The payload's size in bytes."""
        return len(self.header) + sum(len(a) + _pad(len(a)) for a in self.arrays)

    def parts(self) -> Iterator[memoryview]:
        """The payload's bytes, part by part (header, each array, its padding); no copies."""
        yield memoryview(self.header)
        for i, data in enumerate(self.arrays):
            if len(data):
                yield data
                if i < len(self.sources):  # read: a mapped array's pages leave this process
                    release_all(self.sources[i])
            if _pad(len(data)):
                yield memoryview(_ZEROS)[: _pad(len(data))]

    def sha256(self) -> str:
        """The SHA-256 hex digest of the payload (one pass over its parts, once per record:
        the audit and the upload of one reply hash it once)."""
        known = _known(self.owner)
        if known is not None:
            return known
        digest = hashlib.sha256()
        for part in self.parts():
            digest.update(part)
        return _remember(self.owner, digest.hexdigest())

    def write(self, out: BinaryIO, *, digest: bool = True) -> str:
        """Write the payload to ``out``; return its SHA-256 hex digest, hashed as written
        unless known already (``digest=False``: not computed, ``""``; a hand-over file)."""
        known = _known(self.owner) if digest else None
        if known is not None or not digest:
            for part in self.parts():
                out.write(part)
            return known or ""
        hasher = hashlib.sha256()
        for part in self.parts():
            hasher.update(part)
            out.write(part)
        return _remember(self.owner, hasher.hexdigest())

    def to_bytes(self) -> bytes:
        """The payload joined (a copy: for small payloads and tests)."""
        return b"".join(self.parts())


_DIGESTS: dict[int, tuple[weakref.ref[Any], str]] = {}


def _forget(key: int) -> Any:
    def drop(_: Any) -> None:
        _DIGESTS.pop(key, None)

    return drop


def _known(owner: Any) -> str | None:
    entry = _DIGESTS.get(id(owner)) if owner is not None else None
    return entry[1] if entry is not None and entry[0]() is owner else None


def _remember(owner: Any, digest: str) -> str:
    if owner is not None:
        key = id(owner)
        try:
            ref = weakref.ref(owner, _forget(key))
        except TypeError:  # not weakly referenceable: not remembered
            return digest
        _DIGESTS[key] = (ref, digest)
    return digest


def _little(arr: np.ndarray, name: str) -> memoryview:
    if arr.dtype.name not in ALLOWED_DTYPES or arr.dtype.kind not in "biuf":
        raise ValidationError(
            f"array {name!r} has dtype {arr.dtype}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
        )
    little = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    if not little.size:
        return memoryview(b"")
    return memoryview(little.reshape(-1)).cast("B")  # type: ignore[arg-type]


class _Collector:
    """Writes array headers (no data) and collects the arrays' bytes, in header order."""

    def __init__(self) -> None:
        self.views: list[memoryview] = []
        self.sources: list[np.ndarray] = []

    def __call__(self, record: ArrayRecord, out: pb.ArrayRecord) -> None:
        for name, arr in record.items():
            self.views.append(_little(arr, name))
            self.sources.append(arr)
            a = out.arrays.add()
            a.name, a.dtype = name, arr.dtype.name
            a.shape.extend(int(d) for d in arr.shape)


def _framed(msg: Any, collect: _Collector, what: str, owner: Any) -> Framed:
    header = msg.SerializeToString()
    if len(header) > MAX_HEADER_BYTES:
        raise ValidationError(f"{what} has a {len(header)}-byte header, above {MAX_HEADER_BYTES}")
    prefix = _PREFIX.pack(MAGIC, len(header))
    head = prefix + header
    return Framed(
        head + bytes(_pad(len(head))), tuple(collect.views), tuple(collect.sources), owner
    )


def arrays_offset(path: str | os.PathLike[str]) -> int:
    """Where the arrays of the framed payload in the file at ``path`` start: the size of its
    prefix, header and padding (what :attr:`Framed.header` holds when it was written).

    Raises
    ------
    ValidationError
        If the file does not start like a framed payload.
    """
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        size = os.fstat(f.fileno()).st_size
    if len(prefix) < _PREFIX.size:
        raise ValidationError(f"{path} is {size} bytes: too short for a framed payload")
    magic, length = _PREFIX.unpack(prefix)
    head = _PREFIX.size + length
    if magic != MAGIC or length > MAX_HEADER_BYTES or head + _pad(head) > size:
        raise ValidationError(f"{path} does not start like a framed payload")
    return head + _pad(head)


def frame_task(task: Task) -> Framed:
    """``task`` as a framed payload (its arrays are views, not copies)."""
    collect = _Collector()
    return _framed(task_message(task, collect), collect, f"task {task.task_id}", task)


def frame_reply(reply: Reply) -> Framed:
    """``reply`` as a framed payload (its arrays are views, not copies)."""
    collect = _Collector()
    return _framed(reply_message(reply, collect), collect, f"reply from {reply.site_id!r}", reply)


def is_framed(data: bytes | bytearray | memoryview | mmap.mmap) -> bool:
    """True when ``data`` starts like a framed payload (else it is a whole message)."""
    return bytes(data[:4]) == MAGIC


def map_file(path: str | os.PathLike[str]) -> mmap.mmap | bytes:
    """A read-only map of the file at ``path`` (``b""`` for an empty file)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


class _Body:
    """Reads the arrays of a framed payload, in header order, from ``buffer``."""

    def __init__(self, buffer: Any, start: int, limits: Limits) -> None:
        self.buffer, self.offset, self.limits = buffer, start, limits
        self.size = len(buffer)

    def __call__(self, msg: pb.ArrayRecord, limits: Limits, where: str) -> ArrayRecord:
        arrays: dict[str, np.ndarray] = {}
        for a in msg.arrays:
            _check_name(a.name, f"{where} array name", limits)
            if a.name in arrays:
                raise ValidationError(f"{where} has two arrays named {a.name!r}")
            arrays[a.name] = self._array(a, f"{where} array {a.name!r}")
        return ArrayRecord(arrays, copy=False)

    def _array(self, a: pb.Array, what: str) -> np.ndarray:
        if a.data:
            raise ValidationError(f"{what} carries inline data in a framed header")
        if a.dtype not in ALLOWED_DTYPES:
            raise ValidationError(
                f"{what} has dtype {a.dtype!r}; allowed dtypes are {sorted(ALLOWED_DTYPES)}"
            )
        shape = tuple(int(d) for d in a.shape)
        if len(shape) > self.limits.max_ndim:
            raise ValidationError(
                f"{what} has {len(shape)} dimensions, above {self.limits.max_ndim}"
            )
        if any(d < 0 for d in shape):
            raise ValidationError(f"{what} has a negative dimension in shape {shape}")
        dtype = np.dtype(a.dtype).newbyteorder("<")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        end = self.offset + nbytes
        if end + _pad(nbytes) > self.size:
            raise ValidationError(
                f"{what} ({nbytes} bytes at offset {self.offset}) runs past the end of the "
                f"{self.size}-byte payload; it is truncated"
            )
        arr = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.offset)
        self._check_padding(end, _pad(nbytes), what)
        self.offset = end + _pad(nbytes)
        arr = arr.reshape(shape)
        if not dtype.isnative:  # pragma: no cover - big-endian hosts only
            arr = arr.astype(dtype.newbyteorder("="))
        _check_values(arr, dtype, self.limits, what)
        return arr

    def _check_padding(self, at: int, n: int, what: str) -> None:
        if n and bytes(self.buffer[at : at + n]) != _ZEROS[:n]:
            raise ValidationError(f"{what} is followed by non-zero padding; corrupted payload")

    def finish(self, what: str) -> None:
        if self.offset != self.size:
            raise ValidationError(
                f"{what} is {self.size} bytes but its header and arrays account for "
                f"{self.offset}; trailing data"
            )


def _check_values(arr: np.ndarray, dtype: np.dtype[Any], limits: Limits, what: str) -> None:
    """Bool bytes are 0 or 1; floats finite if ``limits`` say so; in bounded blocks."""
    check_bool = dtype.kind == "b"
    check_finite = limits.require_finite and dtype.kind == "f"
    if not (check_bool or check_finite) or arr.size == 0:
        return
    flat = arr.reshape(-1)
    for start in range(0, flat.size, CHECK_BLOCK):
        part = slice(start, min(start + CHECK_BLOCK, flat.size))
        block = flat[part]
        if check_bool and block.view(np.uint8).max() > 1:
            raise ValidationError(f"{what} has dtype bool but bytes other than 0 and 1")
        if check_finite and not np.isfinite(block).all():
            raise ValidationError(f"{what} has NaN or infinite values")
        release_pages(flat, part)  # checked: a mapped payload's pages leave the process


def _buffer(source: Source) -> Any:
    if isinstance(source, str | os.PathLike):
        try:
            return map_file(source)
        except OSError as err:
            raise ValidationError(f"payload file {source} cannot be read: {err}") from None
    return source


def _header(buffer: Any, msg_type: Any, what: str, limits: Limits) -> tuple[Any, int]:
    size = len(buffer)
    if size > limits.max_framed_bytes:
        raise ValidationError(f"{what} is {size} bytes, above the limit {limits.max_framed_bytes}")
    if size < _PREFIX.size:
        raise ValidationError(f"{what} is {size} bytes: too short for a framed payload")
    magic, length = _PREFIX.unpack_from(buffer, 0)
    if magic != MAGIC:
        raise ValidationError(f"{what} does not start with {MAGIC!r}")
    if length > MAX_HEADER_BYTES or _PREFIX.size + length > size:
        raise ValidationError(f"{what} declares a {length}-byte header in {size} bytes")
    try:
        msg = msg_type.FromString(bytes(buffer[_PREFIX.size : _PREFIX.size + length]))
    except DecodeError as err:
        raise ValidationError(f"{what} header is not a valid protobuf message ({err})") from None
    if msg.version != MESSAGE_VERSION:
        raise ValidationError(
            f"{what} has message version {msg.version}; this fedcare understands {MESSAGE_VERSION}"
        )
    if msg.end != END_MARKER:
        raise ValidationError(f"{what} header lacks its end marker; it is truncated")
    head = _PREFIX.size + length
    if bytes(buffer[head : head + _pad(head)]) != _ZEROS[: _pad(head)]:
        raise ValidationError(f"{what} header is followed by non-zero padding")
    return msg, head + _pad(head)


def _count(records: list[pb.ArrayRecord], limits: Limits, what: str) -> None:
    n = sum(len(r.arrays) for r in records)
    if n > limits.max_arrays:
        raise ValidationError(f"{what} has {n} arrays, above the limit {limits.max_arrays}")


def read_task(source: Source, *, limits: Limits = DEFAULT_LIMITS) -> Task:
    """The :class:`Task` in ``source`` (framed or a whole ``TaskMessage``), checked.

    A framed task's arrays are read-only views of ``source`` (of a memory map when
    ``source`` is a path: the file's pages are read when the arrays are).
    """
    buffer = _buffer(source)
    if not is_framed(buffer):
        return decode_task(bytes(buffer), limits=limits)
    msg, start = _header(buffer, pb.TaskMessage, "framed task", limits)
    _count([msg.params, *(n.record for n in msg.arrays)], limits, "framed task")
    body = _Body(buffer, start, limits)
    task = task_from_message(msg, limits, body)
    body.finish("framed task")
    return task


def read_reply(source: Source, *, limits: Limits = DEFAULT_LIMITS) -> Reply:
    """The :class:`Reply` in ``source`` (framed or a whole ``ReplyMessage``), checked."""
    buffer = _buffer(source)
    if not is_framed(buffer):
        return decode_reply(bytes(buffer), limits=limits)
    msg, start = _header(buffer, pb.ReplyMessage, "framed reply", limits)
    _count([msg.arrays], limits, "framed reply")
    body = _Body(buffer, start, limits)
    reply = reply_from_message(msg, limits, body)
    body.finish("framed reply")
    return reply


def write_file(framed: Framed, path: Path, *, digest: bool = True) -> str:
    """Write ``framed`` to ``path`` (atomically: a temporary file renamed); its SHA-256 hex
    (``""`` with ``digest=False``, for a hand-over file nobody checks)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        digest_hex = framed.write(out, digest=digest)
    os.replace(tmp, path)
    return digest_hex
