"""Payloads to and from ``Chunk`` messages, so a model larger than one gRPC message travels.

Pure functions, no sockets. :func:`chunk` cuts a payload; :func:`assemble` checks and joins the
chunks of one transfer in arrival order: index order, chunk count, the declared size against a
limit before any data is kept, agreement of every chunk with the first, and the SHA-256 of the
whole payload. Every failure is a :class:`~fedcare.errors.ValidationError` saying which.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain as _chain

from fedcare.errors import TransferIncompleteError, ValidationError
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = ["DEFAULT_CHUNK_SIZE", "assemble", "chunk", "new_transfer_id"]

DEFAULT_CHUNK_SIZE = 1 << 20


def new_transfer_id() -> str:
    """A fresh random transfer id (32 hex characters)."""
    return uuid.uuid4().hex


def chunk(
    payload: bytes, *, transfer_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[pb.Chunk]:
    """Cut ``payload`` into ``Chunk`` messages of at most ``chunk_size`` bytes.

    Every chunk carries the transfer id, its index, the chunk count, the payload's size and
    its SHA-256. An empty payload is one empty chunk, so a transfer is never an empty stream.

    Raises
    ------
    ValidationError
        If ``chunk_size`` is not positive or ``transfer_id`` is empty or longer than 128.
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValidationError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not transfer_id or len(transfer_id) > 128:
        raise ValidationError(f"transfer_id must have 1 to 128 characters, got {transfer_id!r}")
    view = memoryview(payload).cast("B")
    total = max(1, -(-len(view) // chunk_size))
    digest = hashlib.sha256(view).digest()

    def pieces() -> Iterator[pb.Chunk]:
        for index in range(total):
            yield pb.Chunk(
                transfer_id=transfer_id,
                index=index,
                total=total,
                total_size=len(view),
                sha256=digest,
                data=bytes(view[index * chunk_size : (index + 1) * chunk_size]),
            )

    return pieces()


def _check_first(first: pb.Chunk, max_bytes: int, size: int | None) -> str:
    tid = first.transfer_id or "<no id>"
    if size is not None and first.total_size != size:
        raise ValidationError(
            f"transfer {tid} declares {first.total_size} bytes in its chunks but {size} "
            "bytes when it started"
        )
    if first.total_size > max_bytes:
        raise ValidationError(
            f"transfer {tid} declares {first.total_size} bytes, above the limit {max_bytes}"
        )
    if first.total < 1 or first.total > max(1, first.total_size):
        raise ValidationError(
            f"transfer {tid} declares {first.total} chunks for {first.total_size} bytes"
        )
    if len(first.sha256) != 32:
        raise ValidationError(f"transfer {tid} carries a {len(first.sha256)}-byte SHA-256")
    return tid


def assemble(chunks: Iterable[pb.Chunk], *, max_bytes: int, size: int | None = None) -> bytes:
    """Check and join the chunks of one transfer, in the order they arrive.

    Parameters
    ----------
    chunks:
        The chunks of one transfer, as :func:`chunk` made them (e.g. a gRPC request stream).
    max_bytes:
        Largest payload accepted; checked against the declared size before any data is kept.
    size:
        The size the sender declared before the chunks (e.g. in the call's metadata), if any;
        the first chunk must declare the same.

    Raises
    ------
    ValidationError
        Saying which: no chunks, an oversized transfer, a chunk out of order or missing, a
        chunk from another transfer, more data or chunks than declared, or a SHA-256
        mismatch (corrupted data); :class:`~fedcare.errors.TransferIncompleteError` for a
        transfer that ended early (truncated: the link was cut).
    """
    it = iter(chunks)
    first = next(it, None)
    if first is None:
        raise ValidationError("transfer has no chunks")
    tid = _check_first(first, max_bytes, size)
    header = (first.transfer_id, first.total, first.total_size, first.sha256)
    hasher = hashlib.sha256()
    parts: list[bytes] = []
    received = expected = 0
    for piece in _chain([first], it):
        if (piece.transfer_id, piece.total, piece.total_size, piece.sha256) != header:
            raise ValidationError(
                f"chunk {piece.index} of transfer {tid} disagrees with the first chunk on "
                "transfer id, chunk count, size or SHA-256"
            )
        if piece.index != expected or expected >= first.total:
            raise ValidationError(
                f"transfer {tid}: expected chunk {expected} of {first.total}, got chunk "
                f"{piece.index} (chunks missing, repeated or out of order)"
            )
        received += len(piece.data)
        if received > first.total_size:
            raise ValidationError(
                f"transfer {tid} is oversized: more than the declared {first.total_size} bytes"
            )
        hasher.update(piece.data)
        parts.append(piece.data)
        expected += 1
    if expected != first.total or received != first.total_size:
        raise TransferIncompleteError(
            f"transfer {tid} is truncated: got {expected} of {first.total} chunks, "
            f"{received} of {first.total_size} bytes"
        )
    if hasher.digest() != first.sha256:
        raise ValidationError(f"transfer {tid} is corrupted: its SHA-256 does not match")
    return b"".join(parts)
