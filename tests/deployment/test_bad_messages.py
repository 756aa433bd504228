"""Malformed PushReply transfers to a real coordinator: each is refused and fails its task.

Every case answers an open, delivered task of the caller (named in the call's metadata). A
transfer that cannot be reassembled or decoded ends with ``INVALID_ARGUMENT`` and a message
naming the problem; the task is closed at once as failed with that reason (an ``invalid_reply``
error reply the round counts), so a refused reply never leaves its round waiting. Nothing of
the bad payload is stored, and the correct reply sent afterwards is refused as too late.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import MESSAGE_VERSION, Task
from fedcare.transport.codec import END_MARKER, chunk, encode_reply, new_transfer_id
from fedcare.transport.grpc import fedcare_pb2 as pb
from fedcare.transport.grpc.fedcare_pb2_grpc import CoordinatorStub

from .helpers import db_state
from .wire import RPC_TIMEOUT_S, Arena, answer, naming, push

Chunks = list[pb.Chunk]
LIMIT = (1 << 31) - 1  # the coordinator's largest accepted transfer (the protobuf limit)


def _framed(payload: bytes) -> Chunks:
    """``payload`` cut into 32-byte chunks with a correct size and SHA-256."""
    return list(chunk(payload, transfer_id=new_transfer_id(), chunk_size=32))


def _raw_reply(task: Task, **fields: object) -> bytes:
    """A ReplyMessage built field by field, to say what the Reply class would refuse."""
    msg = pb.ReplyMessage(
        version=MESSAGE_VERSION,
        study_id=task.study_id,
        round=task.round,
        site_id=task.site_id,
        kind=task.kind,
        num_samples=10,
        end=END_MARKER,
    )
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg.SerializeToString()


def _with_array(task: Task, dtype: str, shape: list[int], data: bytes) -> bytes:
    msg = pb.ReplyMessage.FromString(_raw_reply(task))
    msg.arrays.arrays.add(name="w", dtype=dtype, shape=shape, data=data)
    return msg.SerializeToString()


def _swap(chunks: Chunks, i: int, j: int) -> Chunks:
    out = list(chunks)
    out[i], out[j] = out[j], out[i]
    return out


def _edit(chunks: Chunks, i: int, **fields: object) -> Chunks:
    out = [pb.Chunk.FromString(c.SerializeToString()) for c in chunks]
    for name, value in fields.items():
        setattr(out[i], name, value)
    return out


def _edit_all(chunks: Chunks, **fields: object) -> Chunks:
    out = chunks
    for i in range(len(chunks)):
        out = _edit(out, i, **fields)
    return out


def _nan_reply(task: Task, value: float) -> bytes:
    arrays = ArrayRecord({"w": np.array([0.1, value, 0.3]), "b": np.array([0.0])})
    return encode_reply(answer(task, arrays=arrays))


#: case -> (chunks from the valid reply's chunks and the task, expected message pattern)
CASES: dict[str, tuple[Callable[[Chunks, Task], Chunks], str]] = {
    "garbage payload": (
        lambda c, t: _framed(b"\xff" * 300),
        r"not a valid protobuf message",
    ),
    "garbage inside a chunk": (
        lambda c, t: _edit(c, 1, data=b"\xff" * len(c[1].data)),
        r"corrupted: its SHA-256 does not match",
    ),
    "a chunk missing": (lambda c, t: c[:1] + c[2:], r"expected chunk 1 of \d+, got chunk 2"),
    "chunks out of order": (lambda c, t: _swap(c, 1, 2), r"out of order"),
    "a chunk repeated": (lambda c, t: c[:2] + c[1:], r"expected chunk 2 of \d+, got chunk 1"),
    "corrupted sha256": (
        lambda c, t: _edit_all(c, sha256=hashlib.sha256(b"something else").digest()),
        r"corrupted: its SHA-256 does not match",
    ),
    "sha256 of the wrong length": (
        lambda c, t: _edit_all(c, sha256=b"\x00" * 16),
        r"carries a 16-byte SHA-256",
    ),
    "chunks disagree on the sha256": (
        lambda c, t: _edit(c, 2, sha256=b"\x01" * 32),
        r"disagrees with the first chunk",
    ),
    "chunks from two transfers": (
        lambda c, t: _edit(c, 1, transfer_id="another-transfer"),
        r"disagrees with the first chunk",
    ),
    "oversized declared size": (
        lambda c, t: _edit_all(c, total_size=LIMIT + 1),
        rf"declares {LIMIT + 1} bytes, above the limit \d+",
    ),
    "more data than declared": (
        lambda c, t: _edit_all(c, total_size=c[0].total_size - 10),
        r"oversized: more than the declared",
    ),
    "no chunks": (lambda c, t: [], r"transfer has no chunks"),
    "truncated message": (
        lambda c, t: _framed(encode_reply(answer(t))[:-7]),
        r"truncated",
    ),
    "unknown message version": (
        lambda c, t: _framed(_raw_reply(t, version=MESSAGE_VERSION + 98)),
        rf"message version {MESSAGE_VERSION + 98}",
    ),
    "NaN in the update": (lambda c, t: _framed(_nan_reply(t, np.nan)), r"NaN or infinite"),
    "infinity in the update": (lambda c, t: _framed(_nan_reply(t, np.inf)), r"NaN or infinite"),
    "negative sample count": (
        lambda c, t: _framed(_raw_reply(t, num_samples=-5)),
        r"num_samples=-5",
    ),
    "unknown task kind": (
        lambda c, t: _framed(_raw_reply(t, kind="train")),
        r"kind 'train'",
    ),
    "array bytes do not match its shape": (
        lambda c, t: _framed(_with_array(t, "float64", [3], b"\x00" * 8)),
        r"carries 8 bytes",
    ),
    "dtype outside the allow-list": (
        lambda c, t: _framed(_with_array(t, "complex128", [1], b"\x00" * 16)),
        r"dtype 'complex128'",
    ),
}


@pytest.fixture(scope="module")
def study(arena_server: Arena) -> tuple[str, Iterator[int]]:
    """One study for the module, and fresh round numbers for its tests."""
    return arena_server.idle_study("bad-messages", keep=True), itertools.count(1)


@pytest.fixture
def open_task(
    arena: Arena, study: tuple[str, Iterator[int]]
) -> Iterator[tuple[CoordinatorStub, Task]]:
    """North's open, delivered fit task (in a round of its own), and north's stub."""
    study_id, rounds = study
    with arena.client("north") as north:
        yield north, arena.open_task(north, "north", study_id, round=next(rounds))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_transfer_is_refused_and_fails_its_task(
    arena: Arena, open_task: tuple[CoordinatorStub, Task], case: str
) -> None:
    north, task = open_task
    valid = _framed(encode_reply(answer(task)))
    assert len(valid) >= 4, "the cases need a transfer of several chunks"
    make, pattern = CASES[case]
    before = db_state(arena.store)

    with pytest.raises(grpc.RpcError) as info:
        push(north, make(valid, task), task=task.task_id)

    err = info.value
    assert isinstance(err, grpc.RpcError)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {err}"
    details = str(err.details())
    assert details.startswith("malformed reply: "), details
    assert re.search(pattern, details), f"{case}: {details!r} lacks {pattern!r}"
    [row] = arena.store.list_tasks(task.study_id, task.round)
    assert row.status == "failed", f"{case}: the task is {row.status!r}"
    [reply] = arena.store.replies_for_round(task.study_id, task.round, 1)
    assert (reply.error_kind, reply.payload_digest) == ("invalid_reply", None), reply
    assert reply.error_message == details, f"{case}: the stored reason differs"
    after = db_state(arena.store)
    changed = {t for t in before if before[t] != after[t]}
    assert changed <= {"tasks", "replies"}, f"{case} changed {changed}"

    ack = push(north, valid)  # the task is closed: the correct reply comes too late
    assert (ack.accepted, ack.error_kind) == (False, "already_answered"), ack.message


def test_an_oversized_transfer_is_refused_before_the_rest_is_sent(
    arena: Arena, open_task: tuple[CoordinatorStub, Task]
) -> None:
    """The declared size is checked on the first chunk; the coordinator buffers nothing more.

    The client sends one chunk declaring more than the limit, then holds the stream open. The
    coordinator must answer without waiting for the rest (it would otherwise keep whatever
    a site streams in memory before looking at the size).
    """
    north, task = open_task
    first = _edit_all(_framed(encode_reply(answer(task))), total_size=LIMIT + 1)[0]
    release = threading.Event()
    sent_all = threading.Event()

    def stream() -> Iterator[pb.Chunk]:
        yield first
        release.wait(RPC_TIMEOUT_S)  # the coordinator answers long before this
        sent_all.set()
        yield first

    before = db_state(arena.store)
    try:
        with pytest.raises(grpc.RpcError) as info:
            north.PushReply(
                stream(),
                timeout=2 * RPC_TIMEOUT_S,
                metadata=naming(task.task_id, [first]),
            )
    finally:
        answered_early = not sent_all.is_set()
        release.set()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert "above the limit" in str(info.value.details())
    assert answered_early, "the coordinator read the whole stream before checking the size"
    [reply] = arena.store.replies_for_round(task.study_id, task.round, 1)
    assert reply.error_kind == "invalid_reply" and "above the limit" in str(reply.error_message)
    after = db_state(arena.store)
    assert {t for t in before if before[t] != after[t]} <= {"tasks", "replies"}


def test_a_transfer_that_ends_early_is_an_interruption_and_leaves_its_task_open(
    arena: Arena, open_task: tuple[CoordinatorStub, Task]
) -> None:
    """Fewer chunks than declared is a cut link (or a stall), not a refusal: send it again."""
    north, task = open_task
    valid = _framed(encode_reply(answer(task)))

    with pytest.raises(grpc.RpcError) as info:
        push(north, valid[:-1], task=task.task_id)

    assert info.value.code() == grpc.StatusCode.ABORTED, info.value
    assert re.search(r"is truncated: got \d+ of \d+ chunks", str(info.value.details()))
    [row] = arena.store.list_tasks(task.study_id, task.round)
    assert row.status == "delivered"
    assert push(north, valid).accepted  # the whole reply, sent again, is accepted
