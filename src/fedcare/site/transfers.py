"""The site side of task and reply transfers: streamed to files, resumable, persisted.

With a coordinator and an agent at protocol 1.2 (:data:`~fedcare.records.protocol.
STREAMED_TRANSFERS`) a study task is never joined in memory:

- **Download.** PullTask names the task in its initial metadata (``fedcare-task``) and sends
  the chunks of its framed payload; they are appended to ``STATE/transfers/task.fcf.part`` as
  they arrive (:class:`~fedcare.transport.transfer.Spool`: whole chunks, SHA-256 checked at
  the end). A cut stream keeps the part; after reconnecting (or an agent restart) the
  download goes on with ``Download(task, offset=confirmed)``, so only the rest is sent again.
  ``NOT_FOUND`` there means the coordinator no longer wants the task: it is dropped. The
  complete file is read with :func:`~fedcare.transport.framed.read_task` (a memory map).
- **Run.** The worker gets the file's path (:meth:`~fedcare.site.worker.TaskWorker.offer_file`).
- **Upload.** The reply is framed and written to ``STATE/transfers/reply.fcf`` with its SHA-256
  (:meth:`~fedcare.transport.framed.Framed.write`), unless its arrays are still those of the
  worker's reply file (open mode: the mods changed only its header): then that file is kept
  and only the new header is written, the reply being the two files' pieces
  (:mod:`fedcare.site.staging`; the model is not written twice). ``UploadStatus`` says how
  many bytes of it the coordinator holds, and PushReply sends the rest (``fedcare-offset``,
  ``fedcare-sha256``).
  The files go when the coordinator answers (accepted, refused, or ``INVALID_ARGUMENT``);
  any other error keeps them for the next session.

The phase and the files' sizes and digests are persisted (:mod:`fedcare.site.held`), so an
agent restart resumes where it was. A coordinator at 1.2 that has no ``UploadStatus``
(``UNIMPLEMENTED``) gets the reply as a whole message, and a task sent whole (a deployment;
a coordinator without streamed downloads) is assembled in memory as before; a study task sent
whole is still kept in ``task.fcf`` (the whole-message encoding: ``read_task`` reads both),
so that it too survives a restart. A task whose payload is corrupted, invalid or not this
site's is answered with an error reply (``task-refused``) instead of being run.
"""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fedcare.errors import TransferIncompleteError, ValidationError
from fedcare.inference.deployment_wire import DEPLOY_KIND
from fedcare.records.messages import Reply, ReplyError, Task, split_task_key
from fedcare.site.held import Held, HeldStore
from fedcare.site.staging import KeptReply, fsync_file, stage_pieces, write_synced
from fedcare.transport.chunks import DEFAULT_CHUNK_SIZE, assemble, chunk
from fedcare.transport.codec import Limits, encode_reply
from fedcare.transport.framed import frame_reply, read_reply, read_task, write_file
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.transfer import Spool, file_chunks

__all__ = ["REFUSED_KIND", "Pushed", "TaskTransfers", "push_whole"]

TASK_METADATA_KEY = "fedcare-task"  # fedcare.coordinator.servicer.TASK_METADATA_KEY
SIZE_METADATA_KEY = "fedcare-size"  # fedcare.coordinator.servicer.SIZE_METADATA_KEY
SHA256_METADATA_KEY = "fedcare-sha256"
OFFSET_METADATA_KEY = "fedcare-offset"
#: The error kind of the reply to a task this site cannot read (corrupted, invalid, not its own).
REFUSED_KIND = "task-refused"


@dataclass(frozen=True)
class Pushed:
    """How the coordinator answered a reply: ``accepted``, else why not."""

    accepted: bool
    message: str = ""


def push_whole(stub: Any, reply: Reply, *, timeout: float) -> Pushed:
    """Send ``reply`` as one whole message (protocol before 1.2); raise the link's error.

    ``INVALID_ARGUMENT`` (refused as invalid: its task is failed) is a refusal, not an error.
    """
    payload = encode_reply(reply)
    metadata = ((TASK_METADATA_KEY, reply.task_id), (SIZE_METADATA_KEY, str(len(payload))))
    return _ack(
        lambda: stub.PushReply(
            chunk(payload, transfer_id=uuid.uuid4().hex), timeout=timeout, metadata=metadata
        )
    )


def _ack(call: Callable[[], Any]) -> Pushed:
    try:
        ack = call()
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise  # the link failed: sent again after reconnecting
        return Pushed(False, f"refused as invalid: {err.details()}")
    if ack.accepted:
        return Pushed(True)
    return Pushed(False, f"refused: {ack.error_kind}: {ack.message}")


def _refusal(key: str, message: str) -> Reply:
    """The error reply to the task ``key`` (``study/round/kind/site[#n]``), which is not run."""
    study, number, kind, site, submission = split_task_key(key) or (key, 0, "", "", 0)
    error = ReplyError(REFUSED_KIND, message)
    return Reply(study, number, site, kind, error=error, submission=submission)  # type: ignore[arg-type]


class TaskTransfers:
    """The held task's transfers for one agent (files under ``STATE/transfers/``).

    Parameters
    ----------
    state_dir:
        The agent's state dir.
    site_id:
        This site's id: a task for another site is refused.
    limits:
        The largest task payload accepted (``max_framed_bytes``; a whole message:
        ``max_payload_bytes``).
    chunk_size:
        The coordinator's chunk size (1 MiB).
    on_event:
        Hears what happened to a held task that is dropped.
    """

    def __init__(
        self,
        state_dir: Path,
        site_id: str,
        *,
        limits: Limits | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_event: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.store = HeldStore(state_dir)
        self._on_event = on_event
        if self.store.problem:
            on_event(self.store.problem)
        self.streamed = False  # this session: the coordinator speaks 1.2
        self.whole_upload = False  # this session's coordinator has no UploadStatus
        self.site_id = site_id
        self.limits = limits or Limits()
        self.chunk_size = chunk_size
        self.downloaded = 0  # bytes of task payload received by this object (measured)
        self.uploaded = 0  # bytes of reply payload sent by this object (measured)
        self.written = 0  # bytes of reply payload this object wrote to stage them (measured)
        self.offsets: list[int] = []  # where each streamed upload of this object started

    def begin(self, streamed: bool) -> None:
        """A new session, with a coordinator at 1.2 (``streamed``) or before."""
        self.streamed, self.whole_upload = streamed, not streamed

    @property
    def held(self) -> Held | None:
        return self.store.held

    def held_keys(self) -> list[str]:
        """What Hello lists in ``held_tasks``."""
        return [] if self.held is None else [self.held.task]

    # ---- download -------------------------------------------------------------------------

    def pull(self, stub: Any, *, wait_s: float, timeout: float) -> Task | Reply | None:
        """PullTask: the task (read from its file when it was streamed), an error reply to send
        instead of running it, or ``None`` (no task, or one the coordinator took back).

        In a 1.2 session, a study task sent whole is kept in ``task.fcf`` too.

        Raises
        ------
        grpc.RpcError, TransferIncompleteError
            The link was cut; a streamed task's part is kept and :meth:`resume` goes on.
        """
        call = stub.PullTask(pb.PullTaskRequest(wait_s=wait_s), timeout=timeout)
        metadata = dict(call.initial_metadata() or ())
        key = metadata.get(TASK_METADATA_KEY, "")
        if key:
            self.store.clear()  # one task at a time: whatever was held is done or dropped
            self.store.save(Held(key, "download"))
            return self._download(call)
        chunks = list(call)
        if not chunks:
            return None
        payload = assemble(chunks, max_bytes=self.limits.max_payload_bytes)
        task = read_task(payload, limits=self.limits)
        if not self.streamed or task.kind == DEPLOY_KIND:  # a deployment stays in memory
            return task
        self.store.clear()
        write_synced(payload, self.store.task_file)
        self.store.save(Held(task.task_id, "run", len(payload), chunks[0].sha256.hex()))
        return read_task(self.store.task_file, limits=self.limits)

    def resume(self, stub: Any, *, timeout: float) -> Task | Reply | None:
        """The held task (phase ``run``: read again from its file), or the rest of its
        download from the whole chunks on disk (``Download``); ``None`` when the coordinator
        no longer delivers it, or cannot resume downloads (the files are removed)."""
        held = self.held
        assert held is not None and held.phase in ("download", "run")
        if held.phase == "run":
            return self._read(held)
        if not self.streamed:
            self._on_event(f"dropped task {held.task}: this coordinator cannot resume downloads")
            self.store.clear()
            return None
        offset = 0
        if held.size is not None:
            offset = self._spool(held).confirmed()
        request = pb.DownloadRequest(task=held.task, offset=offset)
        try:
            return self._download(stub.Download(request, timeout=timeout))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            self._on_event(f"dropped task {held.task}: the coordinator no longer delivers it")
            self.store.clear()
            return None

    def _spool(self, held: Held) -> Spool:
        assert held.size is not None
        return Spool(
            self.store.task_file,
            size=held.size,
            sha256=bytes.fromhex(held.sha256),
            chunk_size=self.chunk_size,
        )

    def _download(self, chunks: Iterable[pb.Chunk]) -> Task | Reply:
        held = self.held
        assert held is not None
        it: Iterator[pb.Chunk] = iter(chunks)
        if held.size is None:  # the first chunk declares the payload's size and digest
            first = next(it, None)
            if first is None:
                raise TransferIncompleteError(f"download of task {held.task} ended before a chunk")
            problem = self._too_big(first.total_size)
            if problem or len(first.sha256) != 32:
                return self._refuse(held, problem or "its chunks carry no 32-byte SHA-256")
            held.size, held.sha256 = first.total_size, first.sha256.hex()
            self.store.save(held)
            it = itertools.chain([first], it)
        spool = self._spool(held)
        try:
            spool.receive(self._counted(it, "downloaded"))
        except TransferIncompleteError:
            raise
        except ValidationError as err:  # corrupted or out of order: its bytes are not kept
            spool.discard()
            return self._refuse(held, f"its download failed a check: {err}")
        held.phase = "run"
        self.store.save(held)
        return self._read(held)

    def _too_big(self, size: int) -> str:
        if size > self.limits.max_framed_bytes:
            return f"its payload is {size} bytes, above this site's limit"
        free = shutil.disk_usage(self.store.root).free
        if size > free:
            return f"its payload is {size} bytes; the state dir has {free} bytes free"
        return ""

    def _read(self, held: Held) -> Task | Reply:
        try:
            task = read_task(self.store.task_file, limits=self.limits)
        except ValidationError as err:
            return self._refuse(held, f"it is not a valid task: {err}")
        if task.task_id != held.task or task.site_id != self.site_id:
            return self._refuse(held, f"its payload is task {task.task_id}")
        return task

    def _refuse(self, held: Held, why: str) -> Reply:
        """Drop the held task's files; the error reply that answers it."""
        self.store.clear()
        return _refusal(held.task, f"site {self.site_id!r} did not run task {held.task}: {why}")

    # ---- upload ---------------------------------------------------------------------------

    def stage(self, reply: Reply, kept: KeptReply | None = None) -> None:
        """Hold ``reply`` for upload (phase ``upload``); the task file goes.

        When its arrays are those of ``kept`` (the worker's reply, read from its file in this
        folder) only its header is written and the reply is held as pieces of the two files
        (:mod:`fedcare.site.staging`); otherwise it is framed whole into ``reply.fcf`` (also
        when that file turns out not to hold its arrays: an event says so).
        """
        key = reply.task_id
        held = self.held if self.held is not None and self.held.task == key else Held(key, "run")
        staged = self._pieces(reply, kept)
        if staged is not None:
            held.reply_pieces, held.reply_size, digest = staged
            self.written += self.store.head_file.stat().st_size  # the arrays: the worker's file
        else:
            if kept is not None:
                kept.path.unlink(missing_ok=True)  # not this reply's arrays: framed whole
            framed = frame_reply(reply)
            digest = write_file(framed, self.store.reply_file)
            fsync_file(self.store.reply_file)  # on disk before the record says it is
            held.reply_pieces, held.reply_size = None, framed.size
            self.written += framed.size
        held.phase, held.reply_sha256 = "upload", digest
        self.store.save(held)
        self.store.task_file.unlink(missing_ok=True)

    def _pieces(
        self, reply: Reply, kept: KeptReply | None
    ) -> tuple[dict[str, Any], int, str] | None:
        """The held record of ``reply`` staged as pieces (pieces, size, SHA-256), or ``None``."""
        if kept is None:
            return None
        try:
            staged = stage_pieces(reply, kept, self.store.head_file)
            if staged is None:
                return None
            pieces, digest = staged
            return json.loads(pieces.to_json(self.store.root)), pieces.size, digest
        except (OSError, ValidationError) as err:  # the worker's file is not this reply's body
            self._on_event(f"reply to {reply.task_id} framed whole: {err}")
            return None

    def upload(self, stub: Any, *, timeout: float) -> Pushed:
        """Send the held reply: the rest after what ``UploadStatus`` confirms, or as one whole
        message to a coordinator without streamed uploads (before 1.2, or ``UNIMPLEMENTED``).
        The files go when the coordinator answers, or says with ``NOT_FOUND`` or
        ``INVALID_ARGUMENT`` that it no longer takes the reply; a link error (raised) keeps them.

        Raises
        ------
        grpc.RpcError
            The link failed.
        """
        held = self.held
        assert held is not None and held.phase == "upload" and held.reply_size is not None
        size, sha256 = held.reply_size, bytes.fromhex(held.reply_sha256)
        if not self.whole_upload:
            try:
                status = stub.UploadStatus(
                    pb.UploadStatusRequest(task=held.task, sha256=sha256, size=size), timeout=30
                )
            except grpc.RpcError as err:
                if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    self.store.clear()  # the task is no longer open, or this upload is refused
                    return Pushed(False, f"dropped: {err.details()}")
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self.whole_upload = True  # a 1.2 coordinator without streamed uploads
        pieces = self.store.pieces(held)
        if self.whole_upload:  # joined in memory: the fallback for an old coordinator only
            joined = self.store.reply_file if pieces is None else b"".join(pieces.blocks())
            pushed = push_whole(stub, read_reply(joined), timeout=timeout)
            self.store.clear()
            return pushed
        offset = self._resume_at(int(status.confirmed), size)
        self.offsets.append(offset)
        chunks = file_chunks(
            self.store.reply_file if pieces is None else pieces,
            sha256=sha256,
            transfer_id=uuid.uuid4().hex,
            offset=offset,
            chunk_size=self.chunk_size,
            size=size,
        )
        metadata = (
            (TASK_METADATA_KEY, held.task),
            (SIZE_METADATA_KEY, str(size)),
            (SHA256_METADATA_KEY, held.reply_sha256),
            (OFFSET_METADATA_KEY, str(offset)),
        )
        pushed = _ack(
            lambda: stub.PushReply(
                self._counted(chunks, "uploaded"), timeout=timeout, metadata=metadata
            )
        )
        self.store.clear()
        return pushed

    def _resume_at(self, confirmed: int, size: int) -> int:
        """Where to send from: ``confirmed`` when it is a whole-chunk offset inside the reply;
        else 0 (the coordinator then starts over: it holds all of it but never took it in,
        or its answer makes no sense)."""
        if confirmed % self.chunk_size or confirmed >= size:
            return 0
        return confirmed

    def _counted(self, chunks: Iterator[pb.Chunk], counter: str) -> Iterator[pb.Chunk]:
        """``chunks``, adding their data's bytes to ``self.<counter>`` as they go."""
        for piece in chunks:
            setattr(self, counter, getattr(self, counter) + len(piece.data))
            yield piece
