"""Streamed, resumable transfers between a real coordinator and a site (protocol 1.2, issue 16).

A real coordinator over mutual TLS (the ``arena``: tests create the tasks) and the site's
transfer module (:mod:`fedcare.site.transfers`) on real gRPC calls that the test cuts: a
PullTask cancelled after 2 of 4 chunks, then Download sends only the rest, to a new
:class:`TaskTransfers` on the same state dir (an agent restart); a PushReply whose request
stream breaks after 2 chunks, then UploadStatus confirms those 2 MiB and the upload sends
only the rest; the coordinator stores the reply; the same for a reply staged as pieces (its
header and the worker's reply file, :mod:`fedcare.site.staging`), stored byte for byte.
Then a real :class:`SiteAgent` started on a state dir that holds a half-downloaded task: its
Hello lists it, it downloads the rest, runs it in its worker and answers it (the dataset is
offered nowhere: the worker's error reply).
Last, a real agent whose TCP connection a proxy drops in the middle of a 3.5 MiB download:
it reconnects, resumes with Download and answers the task, having received each byte once;
and one whose link drops in the middle of the upload of its 3.5 MiB reply: it reconnects and
sends the rest from the offset UploadStatus confirms.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site import worker_io
from fedcare.site.app import Handler
from fedcare.site.config import SiteDataConfig
from fedcare.site.held import TRANSFERS_DIR
from fedcare.site.transfers import TaskTransfers
from fedcare.transport.framed import frame_reply, frame_task, read_reply
from fedcare.transport.grpc import fedcare_pb2 as pb

from .bench import status_of, wait_until
from .helpers import AgentThreads
from .wire import NOWHERE, Arena, answer

MIB = 1 << 20
ANSWERED = ("replied", "failed")
#: 3.5 MiB of parameters: a framed task of 4 chunks.
BIG = ArrayRecord({"w": np.linspace(-1.0, 1.0, 7 * MIB // 16), "b": np.arange(3.0)})


class CutLink:
    """A real stub whose PullTask is cancelled, and whose PushReply's request stream breaks,
    after ``after`` chunks (each once)."""

    def __init__(self, stub: Any, after: int) -> None:
        self.stub, self.after = stub, after

    def PullTask(self, request: Any, timeout: float) -> Any:
        return _Cancelled(self.stub.PullTask(request, timeout=timeout), self.after)

    def UploadStatus(self, request: Any, timeout: float) -> Any:
        return self.stub.UploadStatus(request, timeout=timeout)

    def PushReply(self, chunks: Iterator[pb.Chunk], timeout: float, metadata: Any) -> Any:
        def breaking() -> Iterator[pb.Chunk]:
            for n, piece in enumerate(chunks):
                if n == self.after:
                    time.sleep(0.5)  # the coordinator has appended what it received
                    raise ConnectionResetError("the hospital's link drops")
                yield piece

        return self.stub.PushReply(breaking(), timeout=timeout, metadata=metadata)


class _Cancelled:
    def __init__(self, call: Any, after: int) -> None:
        self.call, self.after = call, after

    def initial_metadata(self) -> Any:
        return self.call.initial_metadata()

    def __iter__(self) -> Iterator[pb.Chunk]:
        it = iter(self.call)
        for _ in range(self.after):
            yield next(it)
        self.call.cancel()
        for _ in it:  # raises CANCELLED (chunks already buffered are not handed on)
            pass


def _deliver(arena: Arena, site: str, round_: int, params: ArrayRecord) -> tuple[Task, int]:
    """A framed fit task for ``site`` stored at the coordinator; its payload's size."""
    study = arena.idle_study(f"streamed-{site}-{round_}")
    task = Task(
        study_id=study, round=round_, site_id=site, kind="fit",
        params=params, config={"seed": 1}, plan={"dataset": NOWHERE},
    )  # fmt: skip
    payload = frame_task(task).to_bytes()
    digest = arena.store.artifacts.put(payload)
    arena.store.create_tasks(study, round_, 1, [(site, "fit", digest, None)])
    return task, len(payload)


def _restarted(state: Path, site: str) -> TaskTransfers:
    transfers = TaskTransfers(state, site)
    transfers.begin(streamed=True)  # the coordinator answered Hello with 1.2
    return transfers


def _hello(stub: Any, held: list[str]) -> None:
    from fedcare.records.messages import MESSAGE_VERSION
    from fedcare.records.protocol import PROTOCOL

    request = pb.HelloRequest(
        site_version="test", message_version=MESSAGE_VERSION, held_tasks=held,
        protocol_major=PROTOCOL[0], protocol_minor=PROTOCOL[1],
    )  # fmt: skip
    stub.Hello(request, timeout=30)


def test_a_cut_download_and_a_cut_upload_resume_with_only_the_rest(
    arena: Arena, tmp_path: Path
) -> None:
    task, size = _deliver(arena, "north", 1, BIG)
    assert 3 * MIB < size <= 4 * MIB
    state = tmp_path / "north"
    with arena.client("north") as stub:
        _hello(stub, [])
        with pytest.raises(grpc.RpcError) as cut:
            _restarted(state, "north").pull(CutLink(stub, 2), wait_s=10, timeout=60)
        assert cut.value.code() == grpc.StatusCode.CANCELLED
        assert status_of(arena, task.study_id, 1, "north") == "delivered"  # not failed
        assert (state / TRANSFERS_DIR / "task.fcf.part").stat().st_size == 2 * MIB
        _hello(stub, [task.task_id])  # the agent restarted: it still holds the task
        transfers = _restarted(state, "north")
        got = transfers.resume(stub, timeout=60)
        assert isinstance(got, Task) and got.task_id == task.task_id
        np.testing.assert_array_equal(got.params["w"], BIG["w"])
        assert transfers.downloaded == size - 2 * MIB  # Download sent only the rest

        transfers.stage(answer(got, arrays=got.params.scale(0.5)))
        held = transfers.held
        assert held is not None and held.reply_size is not None and held.reply_size > 3 * MIB
        with pytest.raises(grpc.RpcError):
            transfers.upload(CutLink(stub, 2), timeout=60)
        _hello(stub, [task.task_id])
        status = stub.UploadStatus(
            pb.UploadStatusRequest(
                task=task.task_id, sha256=bytes.fromhex(held.reply_sha256), size=held.reply_size
            ),
            timeout=30,
        )
        assert status.confirmed == 2 * MIB
        again = _restarted(state, "north")
        pushed = again.upload(stub, timeout=60)
        assert pushed.accepted, pushed.message
        assert again.uploaded == held.reply_size - 2 * MIB  # only the rest went again
    assert status_of(arena, task.study_id, 1, "north") == "replied"
    [stored] = arena.store.replies_for_round(task.study_id, 1, 1)
    assert stored.payload_digest == held.reply_sha256 and stored.error_kind is None
    reply = read_reply(arena.store.artifacts.path(stored.payload_digest))
    np.testing.assert_array_equal(reply.arrays["w"], BIG["w"] * 0.5)
    assert not list((state / TRANSFERS_DIR).glob("*.fcf*"))  # the site's files are gone


def test_a_reply_staged_as_pieces_is_uploaded_cut_and_resumed_byte_for_byte(
    arena: Arena, tmp_path: Path
) -> None:
    """Open mode: the reply's arrays are the worker's, so it is held as its header and the
    worker's file (no second copy of the model); a cut upload resumes after a restart."""
    task, _ = _deliver(arena, "north", 2, BIG)
    state = tmp_path / "north"
    with arena.client("north") as stub:
        _hello(stub, [])
        transfers = _restarted(state, "north")
        got = transfers.pull(stub, wait_s=10, timeout=60)
        assert isinstance(got, Task)
        hand = worker_io.HandOver(worker_io.io_dir(state), got, None, transfers.store.body_file)
        said = worker_io._answer(json.loads(hand.request()), lambda t: answer(t))
        worker = hand.reply(json.dumps(said).encode())
        hand.close()
        final = replace(worker, metrics={"loss": 0.25}, info={"approval_id": "a-1"})
        transfers.stage(final, hand.kept)
        held = transfers.held
        assert held is not None and held.reply_pieces is not None
        assert transfers.written < 4096 < 3 * MIB < held.reply_size  # only the header
        with pytest.raises(grpc.RpcError):
            transfers.upload(CutLink(stub, 2), timeout=60)
        _hello(stub, [task.task_id])
        again = _restarted(state, "north")  # an agent restart in phase upload
        assert again.upload(stub, timeout=60).accepted
        assert again.uploaded == held.reply_size - 2 * MIB
    [stored] = arena.store.replies_for_round(task.study_id, 2, 1)
    assert stored.payload_digest == held.reply_sha256 and stored.error_kind is None
    path = arena.store.artifacts.path(stored.payload_digest)
    assert path.read_bytes() == frame_reply(final).to_bytes()
    reply = read_reply(path)
    assert reply.metrics == {"loss": 0.25} and reply.info == {"approval_id": "a-1"}
    np.testing.assert_array_equal(reply.arrays["w"], BIG["w"] * 0.5)
    assert not list((state / TRANSFERS_DIR).glob("*.fcf*"))  # header and body removed


def test_an_agent_started_holding_half_a_download_finishes_and_answers_it(
    arena: Arena, tmp_path: Path
) -> None:
    task, size = _deliver(arena, "south", 1, BIG)
    state = tmp_path / "south"
    with arena.client("south") as stub:
        _hello(stub, [])
        with pytest.raises(grpc.RpcError):
            _restarted(state, "south").pull(CutLink(stub, 1), wait_s=10, timeout=60)
    agents = AgentThreads()
    try:
        agent = agents.start(
            arena.kits.sites["south"], SiteDataConfig(datasets={}),
            address=arena.address, state_dir=state,
        )  # fmt: skip
        wait_until(lambda: status_of(arena, task.study_id, 1, "south") in ANSWERED, 60)
        events = list(agents.events["south"])
    finally:
        agents.close()
    assert f"resuming task {task.task_id} (download)" in "\n".join(events), events
    [reply] = arena.store.replies_for_round(task.study_id, 1, 1)
    # it ran in the worker: this site offers no such dataset (not "site_restarted")
    assert reply.error_kind == "unknown-dataset", (reply.error_kind, reply.error_message)
    assert agent.transfers.downloaded == size - MIB
    assert agent.transfers.held is None and not (state / TRANSFERS_DIR / "held.json").exists()


class DroppingProxy:
    """A TCP proxy to the coordinator that drops its first connection once ``cut`` bytes came
    from the coordinator (``up``: went to it); TLS passes through: the agent still talks to
    127.0.0.1. Until the drop that direction runs at ``RATE`` (a hospital link; it also
    gives the receiver time to take in each whole chunk before the drop)."""

    RATE = 16 * MIB  # bytes per second

    def __init__(self, target: str, cut: int, *, up: bool = False) -> None:
        self.target, self.cut, self.up = target, cut, up
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            first = self.connections == 0
            self.connections += 1
            pair = (client, upstream)
            limit = self.cut if first else None
            up, down = (limit, None) if self.up else (None, limit)
            threading.Thread(
                target=self._pump, args=(client, upstream, up, pair), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, down, pair), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None, pair: Any) -> None:
        sent = 0
        try:
            while data := src.recv(1 << 16):
                if limit is not None:
                    time.sleep(len(data) / self.RATE)
                dst.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    self.dropped.set()
                    break
        except OSError:
            pass
        for sock in pair:  # one side ended: drop the connection
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()


def test_an_agent_whose_link_drops_mid_download_resumes_it_after_reconnecting(
    arena: Arena, tmp_path: Path
) -> None:
    task, size = _deliver(arena, "doomed", 1, BIG)
    proxy = DroppingProxy(arena.address, cut=2 * MIB + MIB // 2)
    agents = AgentThreads()
    try:
        agent = agents.start(
            arena.kits.sites["doomed"], SiteDataConfig(datasets={}),
            address=f"127.0.0.1:{proxy.port}", state_dir=tmp_path / "doomed",
        )  # fmt: skip
        wait_until(lambda: status_of(arena, task.study_id, 1, "doomed") in ANSWERED, 90)
        events = list(agents.events["doomed"])
    finally:
        agents.close()
        proxy.close()
    story = "\n".join(events)
    assert proxy.dropped.is_set() and proxy.connections >= 2, story
    assert f"resuming task {task.task_id} (download)" in story, story
    [reply] = arena.store.replies_for_round(task.study_id, 1, 1)
    assert reply.error_kind == "unknown-dataset", (reply.error_kind, reply.error_message, story)
    # the chunks before the cut were kept, Download sent the rest: no byte came twice
    assert agent.transfers.downloaded == size, story


def test_an_agent_whose_link_drops_mid_upload_sends_only_the_rest_after_reconnecting(
    arena: Arena, tmp_path: Path
) -> None:
    task, _ = _deliver(arena, "rotated", 1, BIG)

    def big_reply(task: Task, next_handler: Handler) -> Reply:  # a 3.5 MiB update
        return answer(task, arrays=task.params.scale(0.5))

    proxy = DroppingProxy(arena.address, cut=2 * MIB + MIB // 2, up=True)
    agents = AgentThreads()
    try:
        agent = agents.start(
            arena.kits.sites["rotated"], SiteDataConfig(datasets={}), mods=[big_reply],
            address=f"127.0.0.1:{proxy.port}", state_dir=tmp_path / "rotated",
        )  # fmt: skip
        wait_until(lambda: status_of(arena, task.study_id, 1, "rotated") in ANSWERED, 90)
        events = list(agents.events["rotated"])
    finally:
        agents.close()
        proxy.close()
    story = "\n".join(events)
    assert proxy.dropped.is_set() and proxy.connections >= 2, story
    assert f"resuming task {task.task_id} (upload)" in story, story
    [reply] = arena.store.replies_for_round(task.study_id, 1, 1)
    assert reply.error_kind is None, (reply.error_kind, reply.error_message, story)
    stored = read_reply(arena.store.artifacts.path(reply.payload_digest))
    np.testing.assert_array_equal(stored.arrays["w"], BIG["w"] * 0.5)
    first, resumed = agent.transfers.offsets
    # the second upload started where the coordinator's part ended: whole MiB, not 0
    assert first == 0 and resumed > 0 and resumed % MIB == 0, agent.transfers.offsets
