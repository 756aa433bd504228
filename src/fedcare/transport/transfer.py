"""Resumable transfers: a file sent as chunks from any whole-chunk offset, received into a file.

A transfer is one file, known in full before it is sent (the coordinator's stored task
payload, a site's spooled reply), so its size and SHA-256 are known up front and travel in
every :class:`Chunk` (as in :mod:`fedcare.transport.chunks`). Chunk ``i`` always holds bytes
``[i * chunk_size, (i + 1) * chunk_size)``, so a transfer cut after ``k`` whole chunks goes on
from chunk ``k``: :func:`file_chunks` sends from an offset, reading the file one chunk at a
time (memory: one chunk), and :class:`Spool` receives into ``<path>.part``, appending each
checked chunk as it arrives.

:meth:`Spool.confirmed` is how far the other side may resume from: the whole chunks on disk
(a torn last chunk, written when the receiver died, is cut off). Data written before a crash
of the receiving process is kept by the kernel; a power loss may lose the unsynced tail, which
the next :meth:`~Spool.confirmed` (the file's size) accounts for. The SHA-256 is computed as
chunks are appended (after a resume, the part already on disk is hashed first, once) and
checked when the last chunk is in: a mismatch deletes the part (its bytes cannot be trusted)
and raises; a match fsyncs the file and renames it to ``path``.

Every refusal is a :class:`~fedcare.errors.ValidationError` saying which check failed; a stream
that ends early is a :class:`~fedcare.errors.TransferIncompleteError` and keeps the part.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from fedcare.errors import TransferIncompleteError, ValidationError
from fedcare.transport.chunks import DEFAULT_CHUNK_SIZE
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.pieces import Pieces

__all__ = ["Spool", "chunk_count", "file_chunks", "file_sha256"]

_READ = 1 << 22


def chunk_count(size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Chunks in a transfer of ``size`` bytes (an empty transfer is one empty chunk)."""
    return max(1, -(-size // chunk_size))


def file_sha256(path: Path, upto: int | None = None) -> hashlib._Hash:
    """A SHA-256 object fed the first ``upto`` bytes of ``path`` (all of it: ``None``)."""
    digest = hashlib.sha256()
    left = os.path.getsize(path) if upto is None else upto
    buf = bytearray(min(_READ, max(left, 1)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while left > 0:
            n = f.readinto(view[: min(len(buf), left)])
            if not n:
                raise ValidationError(f"{path} ends before byte {upto}")
            digest.update(view[:n])
            left -= n
    return digest


def file_chunks(
    source: Path | Pieces,
    *,
    sha256: bytes,
    transfer_id: str,
    offset: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    size: int | None = None,
) -> Iterator[pb.Chunk]:
    """The chunks of the file at ``source`` (or of the payload its :class:`Pieces` make) from
    byte ``offset`` (a multiple of ``chunk_size``).

    ``sha256`` is the whole payload's digest (32 bytes), ``size`` its size (read from the file
    if not given). The payload is read one chunk at a time.

    Raises
    ------
    ValidationError
        If ``offset`` is not a whole-chunk offset within the payload.
    """
    pieces = source if isinstance(source, Pieces) else Pieces.whole(source)
    total_size = pieces.size if size is None else size
    total = chunk_count(total_size, chunk_size)
    if offset < 0 or offset % chunk_size or (offset >= total_size and total_size):
        raise ValidationError(
            f"transfer {transfer_id}: offset {offset} is not a chunk boundary within "
            f"{total_size} bytes (chunks of {chunk_size})"
        )

    def chunks() -> Iterator[pb.Chunk]:
        reads = pieces.blocks(offset, chunk_size) if total_size else iter([b""])
        for index, data in enumerate(reads, start=offset // chunk_size):
            yield pb.Chunk(
                transfer_id=transfer_id,
                index=index,
                total=total,
                total_size=total_size,
                sha256=sha256,
                data=data,
            )

    return chunks()


class Spool:
    """One transfer being received into ``path`` (``path.part`` until it is complete).

    Parameters
    ----------
    path:
        Where the complete, verified file goes.
    size, sha256:
        The transfer's size and SHA-256 (32 bytes), as its sender declared them.
    chunk_size:
        The sender's chunk size.
    """

    def __init__(
        self, path: Path, *, size: int, sha256: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if len(sha256) != 32:
            raise ValidationError(f"transfer to {path.name} declares a {len(sha256)}-byte SHA-256")
        if size < 0:
            raise ValidationError(f"transfer to {path.name} declares {size} bytes")
        self.path, self.size, self.sha256, self.chunk_size = path, size, sha256, chunk_size
        self.part = path.with_name(path.name + ".part")

    def complete(self) -> bool:
        """Whether the verified file is in place."""
        return self.path.is_file() and self.path.stat().st_size == self.size

    def confirmed(self) -> int:
        """Bytes received so far in whole chunks (a torn last chunk is cut off the part)."""
        if self.complete():
            return self.size
        try:
            have = self.part.stat().st_size
        except FileNotFoundError:
            return 0
        whole = min(have - have % self.chunk_size, self.size - self.size % self.chunk_size)
        if whole != have:
            os.truncate(self.part, whole)
        return whole

    def discard(self) -> None:
        """Remove the part and the file."""
        self.part.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def receive(
        self, chunks: Iterable[pb.Chunk], *, on_chunk: Callable[[int], None] | None = None
    ) -> Path:
        """Append ``chunks`` (starting at chunk ``confirmed() // chunk_size``); the file when
        the transfer is complete and verified.

        ``on_chunk`` hears the bytes confirmed after each chunk is appended.

        Raises
        ------
        ValidationError
            A chunk of another transfer, size or digest, out of order, too long; the complete
            file's SHA-256 differs (the part is deleted).
        TransferIncompleteError
            The stream ended before the last chunk (what arrived is kept).
        """
        if self.complete():
            return self.path
        at = self.confirmed()
        total = chunk_count(self.size, self.chunk_size)
        digest = file_sha256(self.part, at) if at else hashlib.sha256()
        self.part.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        last = False
        try:
            for piece in chunks:
                self._check(piece, at, total)
                data = piece.data
                if len(data) != min(self.chunk_size, self.size - at):
                    raise ValidationError(
                        f"chunk {piece.index} of the transfer to {self.path.name} has "
                        f"{len(data)} bytes; expected {min(self.chunk_size, self.size - at)}"
                    )
                digest.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                at += len(data)
                if on_chunk is not None:
                    on_chunk(at)
                if at >= self.size:
                    last = True
                    break
            if not last:
                raise TransferIncompleteError(
                    f"transfer to {self.path.name} is cut: {at} of {self.size} bytes"
                )
            os.fsync(fd)
        finally:
            os.close(fd)
        if digest.digest() != self.sha256:
            self.part.unlink(missing_ok=True)
            raise ValidationError(
                f"transfer to {self.path.name} is corrupted: its SHA-256 does not match"
            )
        os.replace(self.part, self.path)
        return self.path

    def _check(self, piece: pb.Chunk, at: int, total: int) -> None:
        expected = at // self.chunk_size
        if (piece.total_size, piece.sha256, piece.total) != (self.size, self.sha256, total):
            raise ValidationError(
                f"chunk {piece.index} of transfer {piece.transfer_id or '<no id>'} declares "
                f"another size, digest or chunk count than the transfer to {self.path.name}"
            )
        if piece.index != expected:
            raise ValidationError(
                f"transfer to {self.path.name}: expected chunk {expected} of {total}, got "
                f"chunk {piece.index} (chunks missing, repeated or out of order)"
            )
