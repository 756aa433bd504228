"""Staging a reply whose arrays are the worker's: a new header before the worker's file.

The worker writes its reply framed to a file (:mod:`fedcare.site.worker_io`), and the agent
reads it mapped. In open mode the governance mods change only the reply's header (metrics,
``info``); the arrays the agent uploads are still the worker's, byte for byte. Framing the
final reply again would write the whole model a second time (400 MB at 100M parameters), so
when the final reply's arrays are the very arrays read from the worker's file (same objects,
same names, same order) the agent keeps that file as ``STATE/transfers/reply-body.fcf``,
writes only the final reply's header (prefix, header and padding: :attr:`Framed.header`) to
``reply-head.fcf``, and holds the reply as :class:`~fedcare.transport.pieces.Pieces`::

    [reply-head.fcf, whole] + [reply-body.fcf, from arrays_offset(reply-body.fcf) to its end]

which is exactly ``frame_reply(final).to_bytes()``: the header's array entries (names, dtypes,
shapes, order) are checked against the body file's before the pieces are made. A reply whose
arrays changed (privacy modes: clipped, masked, quantized, encrypted) is framed whole by the
caller instead (:meth:`fedcare.site.transfers.TaskTransfers.stage`).

The digest is :meth:`Framed.sha256` of the final reply: the audit mod (:func:`fedcare.site.mods.
audit_mod`) has already hashed that reply object, so the digest recorded in the audit log is the
one uploaded, computed once; without an audit it is computed here, one pass over the mapped
arrays, which are the body file's bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from fedcare.errors import ValidationError
from fedcare.records.messages import Reply
from fedcare.transport.framed import arrays_offset, frame_reply
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.pieces import Pieces

__all__ = [
    "KeptReply",
    "fsync_file",
    "same_arrays",
    "stage_pieces",
    "write_synced",
]

_PREFIX = struct.Struct("<4sI")  # fedcare.transport.framed: magic, header length
Entry = tuple[str, str, tuple[int, ...]]


@dataclass(frozen=True)
class KeptReply:
    """The worker's reply and the framed file it was read from (its arrays map that file)."""

    reply: Reply
    path: Path


def same_arrays(final: Reply, kept: Reply) -> bool:
    """True when ``final``'s arrays are ``kept``'s array objects, same names, same order."""
    ours, theirs = list(final.arrays.items()), list(kept.arrays.items())
    if len(ours) != len(theirs):
        return False
    return all(a == b and x is y for (a, x), (b, y) in zip(ours, theirs, strict=True))


def stage_pieces(final: Reply, kept: KeptReply, head: Path) -> tuple[Pieces, str] | None:
    """Write ``final``'s framed header to ``head`` and return the pieces of its framed payload
    (``head`` + the arrays of ``kept.path``) and its SHA-256 hex; ``None`` when the arrays are
    not ``kept``'s (frame the reply whole instead). Both files are fsynced.

    Raises
    ------
    ValidationError
        If the body file's array entries or size do not match ``final``'s header.
    """
    if not final.arrays or not same_arrays(final, kept.reply):
        return None
    framed = frame_reply(final)
    body = kept.path
    start = arrays_offset(body)
    with open(body, "rb") as f:
        theirs = _entries(f.read(start), body)
    ours = _entries(framed.header, Path("<final reply header>"))
    if ours != theirs:
        raise ValidationError(f"reply body {body} holds arrays {theirs}, the reply {ours}")
    length = os.path.getsize(body) - start
    if length != framed.size - len(framed.header):
        raise ValidationError(
            f"reply body {body} has {length} bytes of arrays; the reply's header needs "
            f"{framed.size - len(framed.header)}"
        )
    write_synced(framed.header, head)
    fsync_file(body)
    pieces = Pieces.of((head, 0, len(framed.header)), (body, start, length))
    return pieces, framed.sha256()  # the audit's digest of this reply, when it hashed it


def _entries(head: bytes, path: Path) -> list[Entry]:
    """The array entries (name, dtype, shape) of a framed reply's header bytes."""
    _, length = _PREFIX.unpack_from(head)
    try:
        msg = pb.ReplyMessage.FromString(head[_PREFIX.size : _PREFIX.size + length])
    except Exception as err:  # protobuf's DecodeError
        raise ValidationError(f"{path}: its header is not a framed reply: {err}") from None
    return [(a.name, a.dtype, tuple(int(d) for d in a.shape)) for a in msg.arrays.arrays]


def write_synced(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically (owner-only, fsynced before the rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def fsync_file(path: Path) -> None:
    """Flush the file at ``path`` to disk (before a record says it is there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
