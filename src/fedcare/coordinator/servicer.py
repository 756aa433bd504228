"""The gRPC handlers sites call. Every handler first establishes who is calling.

The caller's site id comes from its client certificate (``peer_identity``), never from a
message field; a task is delivered only to the site it was made for, and a reply is accepted
only from the site the task was made for, for an open task of a running study. A malformed
transfer gets ``INVALID_ARGUMENT``; a well-formed but refused reply gets ``accepted=False`` with
the reason. Either way nothing is stored. Every call but Hello from a site that has not said
Hello (is not registered) gets ``FAILED_PRECONDITION`` ("say Hello first").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
from cryptography import x509

from fedcare.coordinator.anchoring import Anchoring
from fedcare.coordinator.hub import Hub
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import FedcareError, NotFoundError, ReplyRefusedError, ValidationError
from fedcare.records.messages import MESSAGE_VERSION, Reply, ReplyError
from fedcare.transport.codec import Limits, assemble, chunk, decode_reply, new_transfer_id
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorServicer as _Base
from fedcare.transport.tls import RevocationList, peer_identity

__all__ = ["CoordinatorServicer"]

MAX_WAIT_S = 30.0


def _serial(context: grpc.ServicerContext) -> str:
    pem = context.auth_context()["x509_pem_cert"][0]
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


class CoordinatorServicer(_Base):
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
        anchoring: Anchoring | None = None,
    ) -> None:
        self.store, self.hub, self.revocations = store, hub, revocations
        self.federation = federation
        self.heartbeat_s = heartbeat_s
        self.limits = limits or Limits(require_finite=True)
        self.anchoring = anchoring

    # --- Hello / Heartbeat -------------------------------------------------------------------
    def Hello(self, request: Any, context: grpc.ServicerContext) -> Any:
        site_id = peer_identity(context, self.revocations)
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
        self.store.touch_site(site_id, version=request.site_version, datasets=datasets)
        from fedcare import __version__

        return pb.HelloResponse(
            federation=self.federation,
            site_id=site_id,
            coordinator_version=__version__,
            message_version=MESSAGE_VERSION,
            server_time=time.time(),
            heartbeat_interval_s=self.heartbeat_s,
            max_chunk_bytes=4 * 1024 * 1024,
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

    # --- tasks -------------------------------------------------------------------------------
    def PullTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        site_id = self._registered(context)
        wait = min(max(float(request.wait_s), 0.0), MAX_WAIT_S)
        end = time.monotonic() + wait
        while context.is_active():
            generation = self.hub.generation()
            self.store.touch_site(site_id)
            task = self.store.next_task_for(site_id)
            if task is not None and task.payload_digest is not None:
                payload = self.store.artifacts.get(task.payload_digest)
                yield from chunk(payload, transfer_id=new_transfer_id())
                return
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self.hub.wait(generation, remaining)

    def PushReply(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        site_id = self._registered(context)
        transfer = ""

        def arriving() -> Iterator[Any]:
            # Chunks go to assemble() as they arrive, so a transfer that declares too many
            # bytes, or sends more than it declared, is refused before the rest is read.
            nonlocal transfer
            for piece in request_iterator:
                transfer = transfer or piece.transfer_id
                yield piece

        try:
            payload = assemble(arriving(), max_bytes=self.limits.max_payload_bytes)
            reply = decode_reply(payload, limits=self.limits)
        except ValidationError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed reply: {err}")
        if reply.site_id != site_id:
            return self._refused(
                transfer, "wrong_site", f"site {site_id!r} cannot reply for site {reply.site_id!r}"
            )
        try:
            self._store(site_id, reply, payload)
        except ReplyRefusedError as err:
            return self._refused(transfer, err.reason, str(err))
        except FedcareError as err:
            return self._refused(transfer, type(err).__name__, str(err))
        self.hub.notify()
        return pb.PushReplyAck(transfer_id=transfer, accepted=True)

    def _store(self, site_id: str, reply: Reply, payload: bytes) -> None:
        task = self._open_task(site_id, reply)
        if reply.error is not None:
            self.store.store_reply(
                task, site_id, error=ReplyError(reply.error.kind, reply.error.message)
            )
            return
        # The payload is stored as received: it is exactly what decode_reply just validated,
        # and encoding the reply again would cost several more copies of a large model.
        # Content-addressed: a refused reply may leave an unreferenced payload file (never a
        # database row); deleting it could remove a byte-identical accepted one.
        digest = self.store.artifacts.put(payload)
        self.store.store_reply(task, site_id, payload_digest=digest, num_samples=reply.num_samples)

    def _open_task(self, site_id: str, reply: Reply) -> str:
        """The id of the delivered task this reply answers (the newest attempt)."""
        try:
            tasks = self.store.list_tasks(reply.study_id, reply.round)
        except NotFoundError as err:
            raise ReplyRefusedError(
                str(err), reason="unknown_task", task_id="", site_id=site_id
            ) from None
        mine = [t for t in tasks if t.site_id == site_id and t.kind == reply.kind]
        if not mine:
            raise ReplyRefusedError(
                f"no {reply.kind} task of study {reply.study_id!r} round {reply.round} was sent "
                f"to site {site_id!r}",
                reason="unknown_task",
                task_id="",
                site_id=site_id,
            )
        return max(mine, key=lambda t: t.attempt).id

    @staticmethod
    def _refused(transfer: str, kind: str, message: str) -> Any:
        return pb.PushReplyAck(
            transfer_id=transfer, accepted=False, error_kind=kind, message=message
        )
