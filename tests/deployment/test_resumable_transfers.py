"""Resumable transfers at a real coordinator over mutual TLS (protocol 1.2), played by hand.

A site's download is cut after a few chunks: the task stays delivered (not failed) and
Download sends only the rest; its upload is cut mid-way: UploadStatus says how much the
coordinator holds and PushReply from there completes it, sending nothing twice; the round
gets the reply whole. An upload that starts anywhere but where the coordinator's part ends is
refused without failing the task; a corrupted one fails it. A round redone keeps the replies
it already received. A round's tasks share one stored body: downloads of them, cut or whole,
are byte-exact; a task whose body is gone fails with DATA_LOSS naming its artifact.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedcare.coordinator.servicer import SIZE_METADATA_KEY, TASK_METADATA_KEY
from fedcare.coordinator.transfer_calls import OFFSET_METADATA_KEY, SHA256_METADATA_KEY
from fedcare.errors import TransferIncompleteError
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.chunks import DEFAULT_CHUNK_SIZE as CHUNK
from fedcare.transport.framed import frame_reply, frame_task, read_task, write_file
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub
from fedcare.transport.transfer import Spool, file_chunks

from .bench import bench, start_round, status_of, study, wait_until  # noqa: F401
from .wire import RPC_TIMEOUT_S, Arena, answer, push, reply_chunks, rpc_error

pytestmark = pytest.mark.slow
BIG = ArrayRecord({"w": np.random.default_rng(7).normal(size=(3, 1_000_000)).astype(np.float32)})


def _download_cut(stub: CoordinatorStub, path: Path, chunks: int) -> tuple[str, Spool]:
    """PullTask, keeping ``chunks`` chunks before the link is cut."""
    call = stub.PullTask(pb.PullTaskRequest(wait_s=20), timeout=60)
    key = dict(call.initial_metadata())[TASK_METADATA_KEY]
    first = next(call)
    spool = Spool(path, size=first.total_size, sha256=first.sha256)
    with pytest.raises(TransferIncompleteError, match="is cut"):
        spool.receive(itertools.chain([first], itertools.islice(call, chunks - 1)))
    call.cancel()
    return key, spool


def _metadata(key: str, size: int, sha: str, offset: int) -> tuple[tuple[str, str], ...]:
    return (
        (TASK_METADATA_KEY, key),
        (SIZE_METADATA_KEY, str(size)),
        (SHA256_METADATA_KEY, sha),
        (OFFSET_METADATA_KEY, str(offset)),
    )


def test_a_cut_download_and_a_cut_upload_resume_and_send_nothing_twice(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    round_, collected = start_round(bench, study, ["north"], timeout=90, params=BIG)
    with bench.client("north") as stub:
        key, spool = _download_cut(stub, tmp_path / "task.fcf", 5)
        assert spool.confirmed() == 5 * CHUNK
        assert status_of(bench, study, round_, "north") == "delivered"  # held, not failed
        rest = list(stub.Download(pb.DownloadRequest(task=key, offset=5 * CHUNK), timeout=60))
        assert rest[0].index == 5 and sum(len(c.data) for c in rest) == spool.size - 5 * CHUNK
        task = read_task(spool.receive(rest))
        assert task.params == BIG and task.task_id == key

        reply = answer(task)
        out = tmp_path / "reply.fcf"
        sha = write_file(frame_reply(reply), out)
        size = out.stat().st_size
        chunks = list(file_chunks(out, sha256=bytes.fromhex(sha), transfer_id="up"))

        def link_drops() -> Iterator[pb.Chunk]:
            yield from chunks[:7]
            raise ConnectionError("the VPN dropped")

        rpc_error(
            lambda: stub.PushReply(link_drops(), timeout=60, metadata=_metadata(key, size, sha, 0))
        )
        status = pb.UploadStatusRequest(task=key, sha256=bytes.fromhex(sha), size=size)
        wait_until(lambda: stub.UploadStatus(status, timeout=RPC_TIMEOUT_S).confirmed > 0, 10)
        held = stub.UploadStatus(status, timeout=RPC_TIMEOUT_S).confirmed
        assert held % CHUNK == 0 and 0 < held <= 7 * CHUNK
        wrong = _metadata(key, size, sha, CHUNK + 1)
        err = rpc_error(lambda: stub.PushReply(iter(chunks[1:]), timeout=60, metadata=wrong))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"this coordinator holds {held} bytes of it" in err.details()
        ack = stub.PushReply(iter(chunks[held // CHUNK :]), timeout=60,
                             metadata=_metadata(key, size, sha, held))  # fmt: skip
        assert ack.accepted, ack
    collected.join(30)
    assert [r.site_id for r in collected.replies] == ["north"], collected.failures
    assert collected.replies[0].arrays == reply.arrays
    assert not any((bench.store.artifacts.root / ".partial").glob("*.part"))  # none left


def test_a_corrupted_resumable_upload_fails_its_task(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    round_, collected = start_round(bench, study, ["south"], timeout=90)
    with bench.client("south") as stub:
        call = stub.PullTask(pb.PullTaskRequest(wait_s=20), timeout=60)
        key = dict(call.initial_metadata())[TASK_METADATA_KEY]
        chunks_in = list(call)
        spool = Spool(tmp_path / "t", size=chunks_in[0].total_size, sha256=chunks_in[0].sha256)
        task = read_task(spool.receive(chunks_in))
        out = tmp_path / "reply.fcf"
        sha = write_file(frame_reply(answer(task)), out)
        size = out.stat().st_size
        data = bytearray(out.read_bytes())
        data[-1] ^= 0xFF  # one flipped byte on the way
        bad = pb.Chunk(transfer_id="x", index=0, total=1, total_size=size,
                       sha256=bytes.fromhex(sha), data=bytes(data))  # fmt: skip
        err = rpc_error(lambda: stub.PushReply(iter([bad]), timeout=60,
                                               metadata=_metadata(key, size, sha, 0)))  # fmt: skip
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "SHA-256 does not match" in err.details()
    collected.join(30)
    assert "SHA-256 does not match" in collected.failures["south"]
    assert status_of(bench, study, round_, "south") == "failed"


def test_a_redone_round_keeps_the_replies_already_received(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
) -> None:
    """A round redone (after a coordinator restart, or a retry) sends the same tasks: a site
    that already answered its byte-identical task is not asked again, its reply is kept."""
    round_, first = start_round(bench, study, ["north", "south"], timeout=4)
    with bench.client("north") as stub:
        task = read_task(_pull_all(stub))
        sent = answer(task)
        assert push(stub, reply_chunks(sent)).accepted
    first.join(30)
    assert "south" in first.failures  # south never answered
    _, second = start_round(bench, study, ["north", "south"], timeout=3, again=round_)
    second.join(30)
    assert [r.site_id for r in second.replies] == ["north"]
    assert second.replies[0].arrays == sent.arrays
    asked = [(t.attempt, t.site_id) for t in bench.store.list_tasks(study, round_)]
    assert sorted(asked) == [(1, "north"), (1, "south"), (2, "south")]


def _pull_all(stub: CoordinatorStub) -> bytes:
    chunks = list(stub.PullTask(pb.PullTaskRequest(wait_s=20), timeout=60))
    return b"".join(c.data for c in chunks)


def test_an_upload_cut_by_a_redone_round_resumes_into_the_new_attempt(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The coordinator restarts mid-upload: the round is redone with the same task (same
    digest). The site, still holding its half-sent reply, resumes the upload into the new
    attempt, which the round gets, instead of training again."""
    round_, first = start_round(bench, study, ["west"], timeout=4, params=BIG)
    with bench.client("west") as stub:
        key, spool = _download_cut(stub, tmp_path / "task.fcf", 3)
        rest = stub.Download(pb.DownloadRequest(task=key, offset=spool.confirmed()), timeout=60)
        task = read_task(spool.receive(rest))
        out = tmp_path / "reply.fcf"
        sha = write_file(frame_reply(answer(task)), out)
        size = out.stat().st_size
        chunks = list(file_chunks(out, sha256=bytes.fromhex(sha), transfer_id="up"))

        def link_drops() -> Iterator[pb.Chunk]:
            yield from chunks[:4]
            raise ConnectionError("the coordinator went away")

        rpc_error(
            lambda: stub.PushReply(link_drops(), timeout=60, metadata=_metadata(key, size, sha, 0))
        )
        first.join(30)  # the attempt ends without the reply (as a restart would end it)
        assert status_of(bench, study, round_, "west") == "expired"
        status = pb.UploadStatusRequest(task=key, sha256=bytes.fromhex(sha), size=size)
        later = rpc_error(lambda: stub.UploadStatus(status, timeout=RPC_TIMEOUT_S))
        assert later.code() == grpc.StatusCode.UNAVAILABLE  # the site keeps it, asks again
        assert "its round is not recorded" in later.details()
        _, second = start_round(bench, study, ["west"], timeout=60, params=BIG, again=round_)
        wait_until(lambda: _confirmed(stub, status) > 0, 10)
        held = _confirmed(stub, status)
        ack = stub.PushReply(iter(chunks[held // CHUNK :]), timeout=60,
                             metadata=_metadata(key, size, sha, held))  # fmt: skip
        assert ack.accepted, ack
    second.join(30)
    assert [r.site_id for r in second.replies] == ["west"], second.failures
    attempts = sorted((t.attempt, t.status) for t in bench.store.list_tasks(study, round_))
    assert attempts == [(1, "expired"), (2, "replied")]


def _confirmed(stub: CoordinatorStub, status: pb.UploadStatusRequest) -> int:
    """What UploadStatus confirms; 0 while the coordinator says to ask again later."""
    try:
        return int(stub.UploadStatus(status, timeout=RPC_TIMEOUT_S).confirmed)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return 0


def _round_tasks(arena: Arena, study_id: str, round_: int, n: int) -> dict[str, str]:
    """site -> payload digest of the round's tasks, once all ``n`` are stored."""
    wait_until(lambda: len(arena.store.list_tasks(study_id, round_)) == n, 20)
    return {t.site_id: str(t.payload_digest) for t in arena.store.list_tasks(study_id, round_)}


def test_a_rounds_tasks_share_one_stored_body_and_download_byte_exact(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two sites' tasks of one round are stored as their own headers and one shared body; a
    download cut and resumed over it, and a whole one, get what a whole file would hold."""
    round_, collected = start_round(bench, study, ["north", "south"], timeout=90, params=BIG)
    digests = _round_tasks(bench, study, round_, 2)
    artifacts = bench.store.artifacts
    bodies = {artifacts.pieces(d).pieces[-1].path for d in digests.values()}
    assert all(artifacts.is_composite(d) for d in digests.values()) and len(bodies) == 1
    [body] = bodies
    assert body.stat().st_size == BIG["w"].nbytes  # the parameters, stored once
    replies = {}
    with bench.client("north") as stub:
        key, spool = _download_cut(stub, tmp_path / "north.fcf", 3)
        rest = stub.Download(pb.DownloadRequest(task=key, offset=3 * CHUNK), timeout=60)
        got = spool.receive(rest).read_bytes()
        assert hashlib.sha256(got).hexdigest() == digests["north"]
        task = read_task(got)
        assert got == frame_task(task).to_bytes() and task.params == BIG
        replies["north"] = answer(task, arrays=ArrayRecord({"w": np.ones(2)}))
        assert push(stub, reply_chunks(replies["north"])).accepted
    with bench.client("south") as stub:
        got = _pull_all(stub)
        assert hashlib.sha256(got).hexdigest() == digests["south"] != digests["north"]
        task = read_task(got)
        assert task.site_id == "south" and task.params == BIG
        replies["south"] = answer(task, arrays=ArrayRecord({"w": np.ones(2)}))
        assert push(stub, reply_chunks(replies["south"])).accepted
    collected.join(30)
    assert sorted(r.site_id for r in collected.replies) == ["north", "south"]


def test_a_task_whose_shared_body_is_gone_fails_with_a_clear_error(
    bench: Arena,  # noqa: F811
    study: str,  # noqa: F811
) -> None:
    round_, collected = start_round(bench, study, ["north", "south"], timeout=90, params=BIG)
    digests = _round_tasks(bench, study, round_, 2)
    bench.store.artifacts.pieces(digests["north"]).pieces[-1].path.unlink()
    with bench.client("north") as stub:
        err = rpc_error(lambda: _pull_all(stub))
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert f"artifact {digests['north']} is incomplete" in err.details()
    assert status_of(bench, study, round_, "north") == "failed"
    with bench.client("south") as stub:
        assert rpc_error(lambda: _pull_all(stub)).code() == grpc.StatusCode.DATA_LOSS
    collected.join(30)
    assert not collected.replies and "payload_unreadable" in collected.failures["north"]
