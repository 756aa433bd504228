"""The gRPC handlers sites call. Every handler first establishes who is calling.

The caller's site id comes from its client certificate (``peer_identity``), never from a
message field; a task is delivered only to the site it was made for, and a reply is accepted
only from the site the task was made for, for an open task of a running study.

A PushReply names its task in the call's metadata (``fedcare-task``) and the coordinator checks
that task (delivered to the caller, still open) and the first chunk's declared size against
that task's limit (:func:`~fedcare.coordinator.streams.reply_limit`) before it reads any
payload. A reply that names no open task gets ``accepted=False`` with the reason and nothing is
stored. A reply for an open task that cannot be decoded or stored is refused as invalid
(``INVALID_ARGUMENT``) and fails its task with that reason (a stored error reply): the round
counts the site as failed at once instead of waiting for a deadline.

One site cannot starve the others: each site has at most ``per_site_streams`` open PullTask
and PushReply calls (more get ``RESOURCE_EXHAUSTED`` at once), a stream that makes no progress
for ``idle_s`` seconds is cut, and Hello and Heartbeat run on their own threads
(:mod:`fedcare.coordinator.lanes`). Hello lists the tasks the site still holds; its other
delivered tasks are failed (``site_restarted``). Every call but Hello from a site that has
not said Hello (is not registered) gets ``FAILED_PRECONDITION`` ("say Hello first"). Hello
records the serial of the certificate the site presents, so ``fedcare sites`` can tell whether
a rotated site has connected with its new certificate. Check answers who the caller is and its
registry status and writes nothing (``fedcare site doctor``). FetchPackage streams a stored
study package archive by hash to a registered site (``NOT_FOUND`` for any other hash). A site
with no study task waiting gets its oldest requested model deployment instead, and a PushReply
naming a deployment (``dep-.../0/deploy/<site>``) is its answer
(:mod:`fedcare.coordinator.deployment_calls`). Hello refuses an incompatible protocol version;
a site behind is not sent what it cannot handle (:mod:`fedcare.coordinator.protocol_gate`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
from cryptography import x509

from fedcare.coordinator.anchoring import Anchoring
from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.deployment_calls import deliver, receive
from fedcare.coordinator.deployments import DeploymentChannel
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.packages import CoordinatorPackages
from fedcare.coordinator.protocol_gate import ProtocolGate
from fedcare.coordinator.rows import TaskInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.streams import IdleWatch, StreamLimiter, reply_limit
from fedcare.coordinator.transfer_calls import (
    OFFSET_METADATA_KEY,
    SHA256_METADATA_KEY,
    SIZE_METADATA_KEY,
    TASK_METADATA_KEY,
    TransferCalls,
    check_answers,
    named,
)
from fedcare.coordinator.transfers import receive_reply, reply_spool
from fedcare.errors import (
    ConfigError,
    FedcareError,
    NotFoundError,
    ReplyRefusedError,
    TransferIncompleteError,
    ValidationError,
)
from fedcare.inference.deployment_wire import is_deployment_key
from fedcare.records.messages import MESSAGE_VERSION, Reply, ReplyError
from fedcare.records.protocol import announced
from fedcare.transport.codec import (
    DEFAULT_CHUNK_SIZE,
    Limits,
    assemble,
    chunk,
    decode_reply,
    new_transfer_id,
)
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorServicer as _Base
from fedcare.transport.tls import RevocationList, peer_identity
from fedcare.transport.transfer import Spool

__all__ = ["SIZE_METADATA_KEY", "TASK_METADATA_KEY", "CoordinatorServicer"]

MAX_WAIT_S = 30.0
#: Largest chunk a PushReply may carry (the gRPC receive limit adds a little framing).
MAX_CHUNK_BYTES = DEFAULT_CHUNK_SIZE


def _serial(context: grpc.ServicerContext) -> str:
    pem = context.auth_context()["x509_pem_cert"][0]
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


class CoordinatorServicer(TransferCalls, _Base):
    """The ``fedcare.v1.Coordinator`` service over a :class:`CoordinatorStore`."""

    def __init__(
        self,
        store: CoordinatorStore,
        hub: Hub,
        revocations: RevocationList,
        *,
        federation: str,
        heartbeat_s: float = 5.0,
        limits: Limits | None = None,
        per_site_streams: int = 2,
        idle_s: float = 30.0,
        anchoring: Anchoring | None = None,
        packages: CoordinatorPackages | None = None,
        deployments: DeploymentChannel | None = None,
        audit: CoordinatorAudit | None = None,
    ) -> None:
        self.store, self.hub, self.revocations = store, hub, revocations
        self.federation = federation
        self.heartbeat_s = heartbeat_s
        self.limits = limits or Limits(require_finite=True)
        self.streams = StreamLimiter(per_site_streams)
        self.idle = IdleWatch(idle_s)
        self.anchoring = anchoring
        self.packages = packages
        self.deployments = deployments
        self.audit = audit  # late replies to closed rounds are audited
        self.gate = ProtocolGate()  # the protocol version each site announced at Hello

    # --- Hello / Heartbeat -------------------------------------------------------------------
    def Hello(self, request: Any, context: grpc.ServicerContext) -> Any:
        site_id = peer_identity(context, self.revocations)
        version = announced(request.protocol_major, request.protocol_minor)
        refused = self.gate.hello(site_id, version)
        if refused:  # a different major, or too many minors behind: say which side to upgrade
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, refused)
        try:
            datasets = json.loads(request.datasets_json or "{}")
        except json.JSONDecodeError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"datasets_json is not JSON: {err}")
        if not isinstance(datasets, dict):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "datasets_json must be an object")
        try:
            site = self.store.get_site(site_id)
        except NotFoundError:
            site = self.store.register_site(site_id, _serial(context))
        if site.status != "active":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"site {site_id!r} is {site.status}")
        self.store.touch_site(
            site_id, version=request.site_version, datasets=datasets, cert_serial=_serial(context)
        )
        self.hub.hello(site_id)  # a study withholding its tasks from this site offers them again
        self.store.reoffer_deployments(site_id)  # its steward may have decided since
        if self.store.fail_unheld_tasks(site_id, list(request.held_tasks)[:1000]):
            self.hub.notify()  # the rounds waiting for them go on now
        from fedcare._version import __version__

        return pb.HelloResponse(
            federation=self.federation,
            site_id=site_id,
            coordinator_version=__version__,
            message_version=MESSAGE_VERSION,
            protocol_major=self.gate.current[0],
            protocol_minor=self.gate.current[1],
            server_time=time.time(),
            heartbeat_interval_s=self.heartbeat_s,
            max_chunk_bytes=MAX_CHUNK_BYTES,
        )

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The caller's identity and registry status, read only (``fedcare site doctor``)."""
        site_id = peer_identity(context, self.revocations)
        try:
            status = self.store.get_site(site_id).status
        except NotFoundError:
            status = "unregistered"
        from fedcare._version import __version__

        return pb.CheckResponse(
            federation=self.federation,
            site_id=site_id,
            site_status=status,
            coordinator_version=__version__,
        )

    def _registered(self, context: grpc.ServicerContext) -> str:
        """The caller's site id, noted as seen; ``FAILED_PRECONDITION`` before its Hello.

        Every call but Hello needs the site registered (its Hello does that); a site that
        skips it gets a clean status, not an unhandled error.
        """
        site_id = peer_identity(context, self.revocations)
        try:
            self.store.touch_site(site_id)
        except NotFoundError:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"site {site_id!r} is not registered at this coordinator: say Hello first",
            )
        return site_id

    def Heartbeat(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._registered(context)
        cancel = False
        if request.task_id:
            study_id = request.task_id.rsplit("/", 3)[0]
            try:
                cancel = self.store.get_study(study_id).status != "running"
            except NotFoundError:
                cancel = True
        return pb.HeartbeatResponse(server_time=time.time(), cancel=cancel)

    # --- audit anchors (fedcare.coordinator.anchoring) --------------------------------------
    def Anchor(self, request: Any, context: grpc.ServicerContext) -> Any:
        site_id = self._registered(context)
        anchoring = self.anchoring
        if anchoring is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this coordinator keeps no audit anchors")
            raise AssertionError("unreachable")  # abort raises
        pem = context.auth_context()["x509_pem_cert"][0]
        return anchoring.answer(site_id, pem, request)

    # --- study packages (fedcare.coordinator.packages) ---------------------------------------
    def FetchPackage(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """A stored package archive by hash, to a registered site (it verifies it itself)."""
        site_id = peer_identity(context, self.revocations)
        with self.streams.slot(site_id, "FetchPackage", context):
            self._registered(context)
            ref = str(request.package)
            try:
                if self.packages is None:
                    raise NotFoundError("this coordinator stores no packages")
                payload = self.packages.read(ref)
            except ConfigError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            except NotFoundError as err:
                context.abort(grpc.StatusCode.NOT_FOUND, str(err))
            with self.idle.watch(context, f"FetchPackage of {site_id}") as ticket:
                for piece in chunk(payload, transfer_id=new_transfer_id()):
                    yield piece
                    self.idle.touch(ticket)

    # --- tasks -------------------------------------------------------------------------------
    def PullTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        site_id = peer_identity(context, self.revocations)
        with self.streams.slot(site_id, "PullTask", context):  # refused before any database work
            self._registered(context)
            yield from self._pull(site_id, float(request.wait_s), context)

    def _pull(self, site_id: str, wait_s: float, context: grpc.ServicerContext) -> Iterator[Any]:
        end = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while context.is_active():
            generation = self.hub.generation()
            self.store.touch_site(site_id)
            task = self.store.next_task_for(site_id)
            if task is not None and self.gate.withhold_task(self.store, site_id, task):
                self.hub.notify()  # failed, naming the site's protocol: the round goes on
                continue
            if task is not None and task.payload_digest is not None:
                yield from self._send_task(site_id, task, context)
                return
            if task is None and self.deployments is not None:
                deployment = self.store.next_deployment_for(site_id)
                if deployment is not None and self.gate.withhold_deployment(
                    self.deployments, deployment
                ):
                    continue
                if deployment is not None:
                    yield from deliver(self.deployments, deployment, self.idle, context)
                    return
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self.hub.wait(generation, remaining)

    def PushReply(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        site_id = peer_identity(context, self.revocations)
        with self.streams.slot(site_id, "PushReply", context):  # refused before any database work
            self._registered(context)
            key, size = named(context)
            if self.deployments is not None and is_deployment_key(key):
                return receive(self.deployments, site_id, (key, size), request_iterator, context)
            try:
                task = self.store.task_for_reply(key, site_id)
            except ReplyRefusedError as err:
                self._late(key, site_id, err)
                return self._refused("", err.reason, str(err))
            except NotFoundError as err:
                return self._refused("", "unknown_task", str(err))
            with self.idle.watch(context, f"PushReply of {site_id} for {key}") as ticket:
                return self._receive(site_id, (key, size), task, request_iterator, context, ticket)

    def _receive(
        self,
        site_id: str,
        named: tuple[str, int],
        task: TaskInfo,
        request_iterator: Iterator[Any],
        context: grpc.ServicerContext,
        ticket: Any,
    ) -> Any:
        transfer = ""

        def arriving() -> Iterator[Any]:
            # Chunks go to assemble() as they arrive, so a transfer that declares more than
            # this task's limit, or sends more than it declared, is refused before the rest
            # is read.
            nonlocal transfer
            for piece in request_iterator:
                self.idle.touch(ticket)
                transfer = transfer or piece.transfer_id
                yield piece

        key, size = named
        metadata = dict(context.invocation_metadata())
        framed = metadata.get(SHA256_METADATA_KEY)
        sent = 0 if task.payload_digest is None else self.store.artifacts.size(task.payload_digest)
        ceiling = self.limits.max_framed_bytes if framed else self.limits.max_payload_bytes
        limit = reply_limit(task.kind, sent, ceiling)
        if size > limit:  # refused before a single chunk is read
            why = f"transfer declares {size} bytes, above the limit {limit} of its {task.kind} task"
            self._invalid(task, site_id, context, f"malformed reply: {why}")
        try:
            if isinstance(framed, str):  # 1.2: spooled to disk as it arrives, resumable
                spool = reply_spool(self.store.artifacts, key, framed, size)
                _resume_at(spool, metadata.get(OFFSET_METADATA_KEY), context)
                reply, digest = receive_reply(self.store.artifacts, spool, arriving(), self.limits)
                payload: bytes | str = digest
            else:
                payload = assemble(arriving(), max_bytes=limit, size=size)
                reply = decode_reply(payload, limits=self.limits)
            check_answers(reply, key)
        except (TransferIncompleteError, grpc.RpcError) as err:
            # The site went away, or the upload stalled and was cut: not a refusal. The task
            # stays open for the site to send it again, or for its deadline.
            context.abort(grpc.StatusCode.ABORTED, f"the upload of {key!r} was cut: {err}")
        except ValidationError as err:
            self._invalid(task, site_id, context, f"malformed reply: {err}")
        try:
            self._store(task.id, site_id, reply, payload)
        except ReplyRefusedError as err:  # e.g. its round closed while it was uploaded
            self._late(key, site_id, err)
            return self._refused(transfer, err.reason, str(err))
        except FedcareError as err:  # e.g. a sample count the store cannot hold
            self._invalid(task, site_id, context, f"invalid reply: {err}")
        self.hub.notify()
        return pb.PushReplyAck(transfer_id=transfer, accepted=True)

    def _invalid(
        self, task: TaskInfo, site_id: str, context: grpc.ServicerContext, why: str
    ) -> None:
        """Fail ``task`` with ``why`` (the round counts it at once) and abort the call."""
        if self.store.fail_task(task.id, site_id, "invalid_reply", why):
            self.hub.notify()
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)

    def _store(self, task_id: str, site_id: str, reply: Reply, payload: bytes | str) -> None:
        if reply.error is not None:
            self.store.store_reply(
                task_id, site_id, error=ReplyError(reply.error.kind, reply.error.message)
            )
            return
        # The payload is stored as received: it is exactly what decode_reply just validated,
        # and encoding the reply again would cost several more copies of a large model.
        # Content-addressed: a refused reply may leave an unreferenced payload file (never a
        # database row); deleting it could remove a byte-identical accepted one.
        digest = payload if isinstance(payload, str) else self.store.artifacts.put(payload)
        self.store.store_reply(
            task_id, site_id, payload_digest=digest, num_samples=reply.num_samples
        )

    @staticmethod
    def _refused(transfer: str, kind: str, message: str) -> Any:
        return pb.PushReplyAck(
            transfer_id=transfer, accepted=False, error_kind=kind, message=message
        )


def _resume_at(spool: Spool, offset: Any, context: grpc.ServicerContext) -> None:
    """An upload from 0 starts over; from elsewhere it must start where the part ends."""
    held = spool.confirmed()
    at = int(offset) if isinstance(offset, str) and offset.isdigit() and len(offset) < 20 else -1
    if at == 0 and held:
        spool.discard()
    elif at != held:
        context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the upload starts at byte {offset!r}; this coordinator holds {held} bytes of it: "
            "ask UploadStatus and resume from there",
        )
