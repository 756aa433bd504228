"""The servicer's task download and reply upload calls (a mixin of
:class:`~fedcare.coordinator.servicer.CoordinatorServicer`), and the PushReply metadata.

:meth:`TransferCalls._send_task` streams a delivered task: to a site speaking protocol 1.2 as
stored (framed, named in the initial metadata, resumable with :meth:`TransferCalls.Download`);
to a site one minor behind as the whole message it reads, failing the task if the download is
cut (that site cannot resume it). A payload the coordinator cannot read (a composite whose
shared body is gone) fails its task and aborts the call with DATA_LOSS naming the artifact.
:meth:`TransferCalls.UploadStatus` says how much of a 1.2
reply upload is held (:mod:`fedcare.coordinator.transfers`).

A reply (PushReply) or an upload (UploadStatus) for a task its deadline-bound round closed is
refused as ``round_closed`` (``NOT_FOUND`` for UploadStatus: the site drops it) with a message
naming the round and when it closed; :meth:`TransferCalls._late` records it once, as the
task's ``late_at`` and a ``late-reply`` audit entry, and stores nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from fedcare.coordinator.rows import TaskInfo
from fedcare.coordinator.store_liveness import split_task_key, task_key
from fedcare.coordinator.transfers import legacy_chunks, stream_task, upload_status
from fedcare.errors import NotFoundError, ReplyRefusedError, StoreError, ValidationError
from fedcare.records.messages import Reply
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.tls import peer_identity

if TYPE_CHECKING:
    from fedcare.coordinator.audit_trail import CoordinatorAudit
    from fedcare.coordinator.hub import Hub
    from fedcare.coordinator.protocol_gate import ProtocolGate
    from fedcare.coordinator.store import CoordinatorStore
    from fedcare.coordinator.streams import IdleWatch, StreamLimiter
    from fedcare.transport.tls import RevocationList

__all__ = [
    "OFFSET_METADATA_KEY",
    "SHA256_METADATA_KEY",
    "SIZE_METADATA_KEY",
    "TASK_METADATA_KEY",
    "TransferCalls",
    "check_answers",
    "named",
]

#: The PushReply metadata key naming the task the reply answers ("study/round/kind/site"); a
#: 1.2 PullTask names its task by it in the initial metadata.
TASK_METADATA_KEY = "fedcare-task"
#: The PushReply metadata key declaring the payload's size in bytes (decimal), checked
#: against the task's limit before any chunk is read; the chunks must declare the same.
SIZE_METADATA_KEY = "fedcare-size"
#: PushReply metadata of a resumable (1.2) upload: the framed payload's SHA-256 (hex) and
#: the offset its chunks start from (what UploadStatus confirmed; 0 starts over).
SHA256_METADATA_KEY = "fedcare-sha256"
OFFSET_METADATA_KEY = "fedcare-offset"


class TransferCalls:
    """Download, UploadStatus and the sending of a delivered task."""

    store: CoordinatorStore
    hub: Hub
    gate: ProtocolGate
    idle: IdleWatch
    streams: StreamLimiter
    revocations: RevocationList
    audit: CoordinatorAudit | None

    def _registered(self, context: grpc.ServicerContext) -> str:  # pragma: no cover - servicer's
        raise NotImplementedError

    def _send_task(
        self, site_id: str, task: TaskInfo, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Stream the delivered ``task``. A 1.2 site resumes a cut download (Download); a
        1.1 site cannot, so its task fails if it does not take all of it."""
        streamed = self.gate.streamed(site_id)
        if streamed:  # the site holds the task by this name, and resumes it by it
            context.send_initial_metadata(((TASK_METADATA_KEY, task_key(task)),))
        sent = False
        try:
            with self.idle.watch(context, f"PullTask of {site_id}") as ticket:
                try:
                    if streamed:
                        yield from stream_task(
                            self.store.artifacts, task, 0, lambda: self.idle.touch(ticket)
                        )
                    else:
                        for piece in legacy_chunks(self.store.artifacts, task):
                            yield piece  # blocks while the site does not read: watched
                            self.idle.touch(ticket)
                except StoreError as err:
                    self._unreadable(site_id, task, err, context)
            sent = True
        finally:
            if not sent and not streamed:  # the site went away mid-download: it won't answer
                why = f"site {site_id!r} did not take the whole task (download cut)"
                if self.store.fail_task(task.id, site_id, "download_interrupted", why):
                    self.hub.notify()

    def Download(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The rest of a delivered, open task's payload from ``request.offset`` (1.2)."""
        site_id = peer_identity(context, self.revocations)
        with self.streams.slot(site_id, "PullTask", context):
            self._registered(context)
            try:
                task = self.store.task_for_reply(str(request.task), site_id)
            except (ReplyRefusedError, NotFoundError) as err:
                self._not_open(str(request.task), err, context)
            if task.payload_digest is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task!r} has no payload")
            with self.idle.watch(context, f"Download of {site_id}") as ticket:
                try:
                    yield from stream_task(
                        self.store.artifacts,
                        task,
                        int(request.offset),
                        lambda: self.idle.touch(ticket),
                    )
                except ValidationError as err:  # an offset that is no chunk boundary
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                except StoreError as err:
                    self._unreadable(site_id, task, err, context)

    def _late(self, key: str, site_id: str, err: ReplyRefusedError) -> None:
        """Record a reply refused because its round closed (once per task): the task's
        ``late_at`` and a ``late-reply`` audit entry. Nothing of the reply is stored."""
        if err.reason != "round_closed":
            return
        task = self.store.note_late_reply(key, site_id)
        if task is not None and self.audit is not None:
            self.audit.late_reply(task)

    def _unreadable(
        self, site_id: str, task: TaskInfo, err: StoreError, context: grpc.ServicerContext
    ) -> None:
        """Fail ``task`` (its stored payload cannot be read: a composite's body is gone) so its
        round goes on, and abort the call with DATA_LOSS saying why."""
        why = f"the coordinator cannot read the payload of task {task_key(task)!r}: {err}"
        if self.store.fail_task(task.id, site_id, "payload_unreadable", why):
            self.hub.notify()
        context.abort(grpc.StatusCode.DATA_LOSS, why)

    def UploadStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """How much of a reply upload this coordinator holds (1.2), to resume it."""
        site_id = self._registered(context)
        try:
            self.store.task_for_reply(str(request.task), site_id)
            confirmed = upload_status(
                self.store.artifacts, str(request.task), bytes(request.sha256), int(request.size)
            )
        except (ReplyRefusedError, NotFoundError) as err:
            if isinstance(err, ReplyRefusedError):
                self._late(str(request.task), site_id, err)
            self._not_open(str(request.task), err, context)
        except ValidationError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.UploadStatusResponse(confirmed=confirmed)

    def _not_open(self, key: str, err: Exception, context: grpc.ServicerContext) -> None:
        """Abort a call about a task that cannot be answered now.

        ``UNAVAILABLE`` while its round may still be redone with the same task (it expired,
        its study runs and has not recorded the round: a restarted coordinator or a retry is
        about to send it again), so the site keeps what it holds and asks again; otherwise
        ``NOT_FOUND``: the site drops the task and its files.
        """
        parts = split_task_key(key)
        if isinstance(err, ReplyRefusedError) and err.reason == "expired" and parts is not None:
            try:
                study = self.store.get_study(parts[0])
            except NotFoundError:
                study = None
            done = (
                -1
                if study is None or study.last_completed_round is None
                else study.last_completed_round
            )
            if study is not None and study.status == "running" and parts[1] > done:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"task {key!r} expired but its round is not recorded: it may be sent "
                    "again; ask again later",
                )
        context.abort(grpc.StatusCode.NOT_FOUND, str(err))


def named(context: grpc.ServicerContext) -> tuple[str, int]:
    """The task a PushReply names and the size it declares, from the call's metadata."""
    metadata = dict(context.invocation_metadata())
    key, size = metadata.get(TASK_METADATA_KEY, ""), metadata.get(SIZE_METADATA_KEY, "")
    key, size = (key, size) if isinstance(key, str) and isinstance(size, str) else ("", "")
    if not key:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed reply: the call names no task (metadata {TASK_METADATA_KEY!r})",
        )
    if not (size.isascii() and size.isdigit()) or len(size) > 19:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed reply: the call declares no size (metadata {SIZE_METADATA_KEY!r})",
        )
    return key, int(size)


def check_answers(reply: Reply, key: str) -> None:
    """The decoded reply must answer the task its call named."""
    named = reply.task_id
    if named != key:
        raise ValidationError(f"the reply answers task {named!r}, but the call named {key!r}")
