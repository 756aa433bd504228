"""Task downloads and reply uploads at the coordinator, streamed from and to files.

Called by :class:`~fedcare.coordinator.servicer.CoordinatorServicer` once it has established
who calls and that the task named is theirs. A task's payload is stored framed
(:mod:`fedcare.transport.framed`), content-addressed in the artifact store, whole or as a
composite of its header and the body it shares with the round's other tasks (read in order as
one payload):

- A site speaking protocol 1.2 (:data:`~fedcare.records.protocol.STREAMED_TRANSFERS`) gets
  it as it is stored, one chunk read from the file at a time (:func:`stream_task`), named in
  the call's initial metadata; a cut download does not fail the task: the site holds it and
  goes on with Download from the last whole chunk it has (:func:`stream_task` with an offset).
- A site one minor behind gets the whole ``TaskMessage`` it understands, converted here.

A 1.2 reply is spooled to ``ARTIFACTS/.partial`` as its chunks arrive (memory: one chunk),
named by task, digest and size, so a cut upload keeps what arrived, also over a coordinator
restart; :func:`upload_status` says how far, and :func:`receive_reply` appends from there,
checks the SHA-256 when the last chunk is in, moves the file into the artifact store under
that digest (its content address) and reads the reply from the mapped file, checking it as a
whole message is checked, without loading it. Parts untouched for :data:`PARTIAL_TTL_S` are
dropped when the coordinator starts (:func:`prune_partials`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.rows import TaskInfo
from fedcare.errors import ValidationError
from fedcare.records.messages import Reply
from fedcare.transport.arrays_wire import Limits
from fedcare.transport.codec import chunk, encode_task, new_transfer_id
from fedcare.transport.framed import is_framed, map_file, read_reply, read_task
from fedcare.transport.transfer import Spool, file_chunks

__all__ = [
    "PARTIAL_TTL_S",
    "legacy_chunks",
    "prune_partials",
    "receive_reply",
    "reply_spool",
    "stream_task",
    "upload_status",
]

PARTIAL_DIR = ".partial"
#: A partial upload untouched this long is dropped at start (its task is long closed).
PARTIAL_TTL_S = 2 * 24 * 3600.0


def stream_task(
    artifacts: ArtifactStore, task: TaskInfo, offset: int, progress: Callable[[], None]
) -> Iterator[Any]:
    """The chunks of ``task``'s stored payload from ``offset`` (its file, or the pieces of a
    composite, a chunk at a time).

    Raises
    ------
    NotFoundError
        If the payload is not stored.
    StoreError
        If a composite payload's pieces are not all there (a body file gone or cut).
    ValidationError
        If ``offset`` is no chunk boundary within the payload.
    """
    assert task.payload_digest is not None
    pieces = artifacts.pieces(task.payload_digest)
    sha = bytes.fromhex(task.payload_digest)
    for piece in file_chunks(pieces, sha256=sha, transfer_id=new_transfer_id(), offset=offset):
        yield piece
        progress()


def legacy_chunks(artifacts: ArtifactStore, task: TaskInfo) -> Iterator[Any]:
    """``task``'s payload as the whole ``TaskMessage`` a protocol 1.1 site reads."""
    assert task.payload_digest is not None
    payload = artifacts.get(task.payload_digest)
    if is_framed(payload):
        payload = encode_task(read_task(payload))
    return chunk(payload, transfer_id=new_transfer_id())


def _partial_dir(artifacts: ArtifactStore) -> Path:
    path = artifacts.root / PARTIAL_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def reply_spool(artifacts: ArtifactStore, key: str, sha_hex: str, size: int) -> Spool:
    """Where the upload of the reply ``sha_hex`` (``size`` bytes) to task ``key`` goes.

    Raises
    ------
    ValidationError
        If ``sha_hex`` is not a SHA-256 hex digest.
    """
    try:
        sha = bytes.fromhex(sha_hex)
    except ValueError:
        sha = b""
    if len(sha) != 32:
        raise ValidationError(f"the upload declares SHA-256 {sha_hex[:80]!r}: not 64 hex digits")
    name = hashlib.sha256(f"{key}\0{sha_hex}\0{size}".encode()).hexdigest()
    return Spool(_partial_dir(artifacts) / name, size=size, sha256=sha)


def upload_status(artifacts: ArtifactStore, key: str, sha: bytes, size: int) -> int:
    """Bytes of the reply ``sha`` to ``key`` held in whole chunks (0: none)."""
    if len(sha) != 32:
        raise ValidationError(f"UploadStatus carries a {len(sha)}-byte SHA-256")
    return reply_spool(artifacts, key, sha.hex(), size).confirmed()


def receive_reply(
    artifacts: ArtifactStore,
    spool: Spool,
    chunks: Iterator[Any],
    limits: Limits,
) -> tuple[Reply, str]:
    """Append ``chunks`` to ``spool``; the checked reply and its digest once complete.

    Raises
    ------
    TransferIncompleteError
        The stream ended early (what arrived is kept for a resume).
    ValidationError
        A bad chunk, a SHA-256 mismatch (the part is dropped) or a malformed reply (the
        stored file stays: content-addressed, like a refused whole-message reply).
    """
    done = spool.receive(chunks)
    digest = spool.sha256.hex()
    final = artifacts.path(digest)
    final.parent.mkdir(mode=0o700, exist_ok=True)
    os.replace(done, final)  # its content address: the SHA-256 just verified
    return read_reply(map_file(final), limits=limits), digest


def prune_partials(artifacts: ArtifactStore, older_than_s: float = PARTIAL_TTL_S) -> int:
    """Delete partial uploads not written to for ``older_than_s`` seconds; how many."""
    folder = artifacts.root / PARTIAL_DIR
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    dropped = 0
    for part in folder.iterdir():
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                dropped += 1
        except FileNotFoundError:  # another process pruned it
            continue
    return dropped
