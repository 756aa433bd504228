"""A site's side of the wire, by hand, and an idle coordinator to talk to (the "arena").

The identity and bad-message tests play the sites themselves over real mutual-TLS channels,
so they can send what a real agent never would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcare.coordinator.server import Coordinator
from fedcare.coordinator.servicer import SIZE_METADATA_KEY, TASK_METADATA_KEY
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION, Reply, Task
from fedcare.records.protocol import PROTOCOL
from fedcare.transport.codec import (
    assemble,
    chunk,
    decode_reply,
    encode_reply,
    encode_task,
    new_transfer_id,
)
from fedcare.transport.framed import read_task
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.tls import channel_credentials

from .helpers import Kits, heart_study, submit, wait_for_status

RPC_TIMEOUT_S = 30.0


@contextmanager
def site_client(kit: Path, address: str) -> Iterator[CoordinatorStub]:
    """A stub on a mutual-TLS channel presenting ``kit``'s certificate."""
    with grpc.secure_channel(address, channel_credentials(kit)) as channel:
        yield CoordinatorStub(channel)


def hello(stub: CoordinatorStub) -> pb.HelloResponse:
    request = pb.HelloRequest(
        site_version="test",
        message_version=MESSAGE_VERSION,
        protocol_major=PROTOCOL[0],
        protocol_minor=PROTOCOL[1],
    )
    response: pb.HelloResponse = stub.Hello(request, timeout=RPC_TIMEOUT_S)
    return response


def pull(stub: CoordinatorStub, wait_s: float) -> Task | None:
    """One PullTask long-poll: the task, or None when none came within ``wait_s``."""
    request = pb.PullTaskRequest(wait_s=wait_s)
    chunks = list(stub.PullTask(request, timeout=wait_s + RPC_TIMEOUT_S))
    # framed (protocol 1.2) or a whole message: read_task reads both
    return read_task(assemble(chunks, max_bytes=1 << 30)) if chunks else None


def push(
    stub: CoordinatorStub, chunks: Iterable[pb.Chunk], task: str | None = None
) -> pb.PushReplyAck:
    """Send ``chunks`` as one PushReply naming ``task`` ("study/round/kind/site").

    Without ``task`` the call names the task the payload answers, as a real agent does (read
    from the reply inside; a payload that does not decode names no task).
    """
    chunks = list(chunks)
    key = task if task is not None else _named_task(chunks)
    metadata = () if key is None else naming(key, chunks)
    ack: pb.PushReplyAck = stub.PushReply(iter(chunks), timeout=RPC_TIMEOUT_S, metadata=metadata)
    return ack


def naming(task: str, chunks: Sequence[pb.Chunk]) -> tuple[tuple[str, str], ...]:
    """PushReply metadata naming ``task`` and the size the first chunk declares."""
    size = chunks[0].total_size if chunks else 0
    return ((TASK_METADATA_KEY, task), (SIZE_METADATA_KEY, str(size)))


def _named_task(chunks: list[pb.Chunk]) -> str | None:
    try:
        reply = decode_reply(b"".join(c.data for c in chunks))
    except ValidationError:
        return None
    return f"{reply.study_id}/{reply.round}/{reply.kind}/{reply.site_id}"


def reply_chunks(reply: Reply, *, chunk_size: int = 64) -> list[pb.Chunk]:
    """``reply`` encoded and cut into small chunks (so a transfer has several)."""
    payload = encode_reply(reply)
    return list(chunk(payload, transfer_id=new_transfer_id(), chunk_size=chunk_size))


def answer(task: Task, **changes: Any) -> Reply:
    """A well-formed successful reply to ``task`` (``changes`` replace its fields)."""
    fields: dict[str, Any] = {
        "study_id": task.study_id,
        "round": task.round,
        "site_id": task.site_id,
        "kind": task.kind,
        "arrays": task.params.scale(0.5),
        "num_samples": 25,
        "metrics": {"loss": 0.5},
    }
    return Reply(**{**fields, **changes})


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call`` raises (fails the test if it succeeds)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert isinstance(err, grpc.RpcError)
    return err


# An idle coordinator for the identity and bad-message tests ---------------------------------
ARENA_SITES = ("north", "south", "doomed", "doomed-agent", "rotated")
NOWHERE = "offered-by-no-site"
ARENA_PARAMS = ArrayRecord({"w": np.array([0.5, -0.25, 1.0]), "b": np.array([0.125])})


@dataclass
class Arena:
    """A real coordinator with no agents: tests play the sites by hand.

    Its studies name a dataset no site offers, so their runners wait for sites forever and
    never touch the tasks a test creates (in rounds >= 1) and delivers over the wire.
    """

    kits: Kits
    coordinator: Coordinator
    #: Studies made by :meth:`idle_study` since the last :meth:`cancel_studies`.
    studies: list[str] = field(default_factory=list)

    @property
    def store(self) -> CoordinatorStore:
        return self.coordinator.store

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.port}"

    def client(self, site: str) -> AbstractContextManager[CoordinatorStub]:
        return site_client(self.kits.sites[site], self.address)

    def idle_study(self, name: str = "idle", *, keep: bool = False) -> str:
        """A running study that the coordinator's runner leaves alone.

        Unless ``keep``, :meth:`cancel_studies` cancels it (the ``arena`` fixture does after
        each test).
        """
        study = heart_study(name=name, dataset={"name": NOWHERE}, min_sites=1)
        study_id = submit(self.store, study)
        wait_for_status(self.store, study_id, "running", timeout=30)  # the scheduler starts it
        # its runner then says once what it waits for (no site offers the dataset) and is still
        deadline = time.monotonic() + 30
        while not (self.store.get_study(study_id).reason or "").startswith("waiting: for "):
            assert time.monotonic() < deadline, "the idle study's runner never said it waits"
            time.sleep(0.02)
        if not keep:
            self.studies.append(study_id)
        return study_id

    def cancel_studies(self) -> None:
        """Cancel the studies of :meth:`idle_study`: their open tasks expire, runners end."""
        for study_id in self.studies:
            if self.store.get_study(study_id).status == "running":
                self.store.set_study_status(study_id, "cancelled", "test over")
        self.studies.clear()

    def open_task(
        self, stub: CoordinatorStub, site: str, study_id: str, round: int, kind: str = "fit"
    ) -> Task:
        """Create a task for ``site`` and deliver it through ``stub`` (a real PullTask)."""
        task = Task(
            study_id=study_id,
            round=round,
            site_id=site,
            kind=kind,  # type: ignore[arg-type]
            params=ARENA_PARAMS,
            config={"seed": 1},
            plan={"dataset": NOWHERE},
        )
        self.create_task(task)
        pulled = pull(stub, wait_s=10)
        assert pulled is not None and pulled.task_id == task.task_id, (
            f"expected to pull {task.task_id}, got {pulled and pulled.task_id}"
        )
        return task

    def create_task(self, task: Task, attempt: int = 1) -> str:
        digest = self.store.artifacts.put(encode_task(task))
        [task_id] = self.store.create_tasks(
            task.study_id, task.round, attempt, [(task.site_id, task.kind, digest, None)]
        )
        self.coordinator.hub.notify()
        return task_id
