"""The gRPC side of deployments: stream a deployment to a site, read its answer.

Called by :class:`fedcare.coordinator.servicer.CoordinatorServicer` (which has already
established who calls): :func:`deliver` streams the signed ``deploy`` task of a deployment
(a deployment whose bundle cannot be built is failed with the reason, and a download the site
cut is offered again at its next Hello); :func:`receive` reads a reply naming a deployment
(at most :data:`~fedcare.coordinator.deployments.REPLY_MAX_BYTES`), checks it answers what
the call named, and records it. A malformed reply gets ``INVALID_ARGUMENT``; one for no open
deployment of the caller gets ``accepted=False`` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from fedcare.coordinator.deployments import REPLY_MAX_BYTES, DeploymentChannel
from fedcare.coordinator.store_deployments import DeploymentInfo
from fedcare.coordinator.streams import IdleWatch
from fedcare.errors import (
    ConflictError,
    FedcareError,
    NotFoundError,
    TransferIncompleteError,
    ValidationError,
)
from fedcare.transport.codec import assemble, chunk, decode_reply, new_transfer_id
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = ["deliver", "receive"]


def deliver(
    channel: DeploymentChannel,
    info: DeploymentInfo,
    idle: IdleWatch,
    context: grpc.ServicerContext,
) -> Iterator[Any]:
    """Stream the ``deploy`` task of ``info`` to its site."""
    try:
        payload = channel.payload(info)
    except FedcareError as err:
        channel.fail(info, f"the coordinator could not send model {info.version}: {err}")
        return
    with idle.watch(context, f"deployment {info.id} to {info.site_id}") as ticket:
        for piece in chunk(payload, transfer_id=new_transfer_id()):
            yield piece
            idle.touch(ticket)


def receive(
    channel: DeploymentChannel,
    site_id: str,
    named: tuple[str, int],
    request_iterator: Iterator[Any],
    context: grpc.ServicerContext,
) -> Any:
    """Read and record the site's reply to a deployment (the call named ``key``)."""
    key, size = named
    if size > REPLY_MAX_BYTES:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed reply: a deployment reply declares {size} bytes, above {REPLY_MAX_BYTES}",
        )
    transfer = ""

    def arriving() -> Iterator[Any]:
        nonlocal transfer
        for piece in request_iterator:
            transfer = transfer or piece.transfer_id
            yield piece

    try:
        reply = decode_reply(assemble(arriving(), max_bytes=REPLY_MAX_BYTES, size=size))
    except (TransferIncompleteError, grpc.RpcError) as err:
        context.abort(grpc.StatusCode.ABORTED, f"the upload of {key!r} was cut: {err}")
    except ValidationError as err:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed reply: {err}")
    named_key = f"{reply.study_id}/{reply.round}/{reply.kind}/{reply.site_id}"
    if named_key != key or reply.site_id != site_id:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed reply: it answers {named_key!r}, the call named {key!r}",
        )
    try:
        channel.record(site_id, reply)
    except NotFoundError as err:
        return pb.PushReplyAck(
            transfer_id=transfer, accepted=False, error_kind="unknown_task", message=str(err)
        )
    except ConflictError as err:
        return pb.PushReplyAck(
            transfer_id=transfer, accepted=False, error_kind="already_answered", message=str(err)
        )
    except ValidationError as err:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid reply: {err}")
    return pb.PushReplyAck(transfer_id=transfer, accepted=True)
