"""Framed payloads (fedcare.transport.framed): round trips, zero copies, and refusals."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, ReplyError, Task
from fedcare.transport.arrays_wire import Limits
from fedcare.transport.codec import encode_reply, encode_task
from fedcare.transport.framed import (
    ALIGN,
    arrays_offset,
    frame_reply,
    frame_task,
    is_framed,
    read_reply,
    read_task,
    write_file,
)


def _task() -> Task:
    params = ArrayRecord(
        {
            "w": np.arange(15, dtype=np.float32).reshape(3, 5),
            "mask": np.array([True, False, True]),
            "h": np.ones(3, np.float16),
            "empty": np.zeros((0, 4)),
            "n": np.array(7, dtype=np.int64),
        }
    )
    return Task(
        study_id="s1",
        round=2,
        site_id="hospital-a",
        kind="fit",
        params=params,
        config={"epochs": 2, "lr": 0.1, "name": "x", "on": True},
        arrays={"control": ArrayRecord({"c": np.linspace(0, 1, 7)})},
        plan={"model": {"type": "mlp"}},
        pipeline={"steps": []},
    )


def test_task_round_trip_matches_the_whole_message_encoding(tmp_path: Path) -> None:
    task = _task()
    framed = frame_task(task)
    data = framed.to_bytes()
    assert len(data) == framed.size and is_framed(data)
    back = read_task(data)
    assert back == read_task(encode_task(task)) == task
    path = tmp_path / "t.fcf"
    assert write_file(framed, path) == framed.sha256()
    mapped = read_task(path)
    assert mapped.params == task.params and mapped.arrays["control"] == task.arrays["control"]
    assert mapped.config == task.config and mapped.plan == task.plan


def test_arrays_are_aligned_views_of_the_mapped_file(tmp_path: Path) -> None:
    task = _task()
    path = tmp_path / "t.fcf"
    write_file(frame_task(task), path)
    w = read_task(path).params["w"]
    assert not w.flags.writeable and not w.flags.owndata  # a view of the map, not a copy
    assert w.__array_interface__["data"][0] % ALIGN == 0


def test_arrays_offset_is_where_the_first_array_starts(tmp_path: Path) -> None:
    framed = frame_task(_task())
    path = tmp_path / "t.fcf"
    write_file(framed, path)
    assert arrays_offset(path) == len(framed.header) and len(framed.header) % ALIGN == 0
    path.write_bytes(b"not a framed payload")
    with pytest.raises(ValidationError, match="does not start like a framed payload"):
        arrays_offset(path)
    path.write_bytes(b"FC")
    with pytest.raises(ValidationError, match="too short"):
        arrays_offset(path)


def test_framing_does_not_copy_the_arrays() -> None:
    big = np.arange(1 << 16, dtype=np.float32)
    framed = frame_task(Task("s", 1, "a", "fit", params=ArrayRecord({"w": big}, copy=False)))
    assert np.shares_memory(np.frombuffer(framed.arrays[0], np.float32), big)


def test_reply_round_trip_with_error_metrics_and_info() -> None:
    reply = Reply(
        study_id="s1",
        round=2,
        site_id="hospital-a",
        kind="fit",
        arrays=ArrayRecord({"w": np.ones((2, 3), np.float32)}),
        num_samples=40,
        metrics={"loss": 0.5},
        info={"plan": "abc"},
    )
    back = read_reply(frame_reply(reply).to_bytes())
    assert back.arrays == reply.arrays and back.num_samples == 40
    assert back.metrics == {"loss": 0.5} and back.info == {"plan": "abc"}
    failed = Reply("s1", 2, "hospital-a", "fit", error=ReplyError("timeout", "too slow"))
    assert read_reply(frame_reply(failed).to_bytes()).error == failed.error
    assert read_reply(encode_reply(reply)).arrays == reply.arrays  # whole messages too


def test_truncated_payload_is_refused() -> None:
    data = frame_task(_task()).to_bytes()
    with pytest.raises(ValidationError, match=r"runs past the end|truncated"):
        read_task(data[: -ALIGN - 8])


def test_trailing_bytes_and_bad_padding_are_refused() -> None:
    data = frame_task(_task()).to_bytes()
    with pytest.raises(ValidationError, match="trailing data"):
        read_task(data + bytes(ALIGN))
    head = struct.unpack_from("<4sI", data)[1] + 8
    spoiled = bytearray(data)
    spoiled[head] = 1  # the header's padding
    with pytest.raises(ValidationError, match="non-zero padding"):
        read_task(bytes(spoiled))


def test_bad_bool_bytes_and_non_finite_values_are_refused() -> None:
    task = Task("s", 1, "a", "fit", params=ArrayRecord({"m": np.array([True, False])}))
    data = bytearray(frame_task(task).to_bytes())
    data[data.index(b"\x01\x00", 40)] = 7
    with pytest.raises(ValidationError, match="bytes other than 0 and 1"):
        read_task(bytes(data))
    nan = Task("s", 1, "a", "fit", params=ArrayRecord({"w": np.array([1.0, np.nan])}))
    payload = frame_task(nan).to_bytes()
    assert np.isnan(read_task(payload).params["w"][1])
    with pytest.raises(ValidationError, match="NaN or infinite"):
        read_task(payload, limits=Limits(require_finite=True))


def test_size_limit_and_wrong_kind_of_payload() -> None:
    data = frame_task(_task()).to_bytes()
    with pytest.raises(ValidationError, match="above the limit 100"):
        read_task(data, limits=Limits(max_framed_bytes=100))
    with pytest.raises(ValidationError):
        read_reply(data)  # a task's header is not a reply
    with pytest.raises(ValidationError, match="too short"):
        read_task(b"FCF1")


def test_inline_data_in_a_framed_header_is_refused() -> None:
    from fedcare.transport.grpc import fedcare_pb2 as pb

    msg = pb.TaskMessage(version=1, study_id="s", round=1, site_id="a", kind="fit", end=0xFEDCA7E1)
    msg.params.arrays.add(name="w", dtype="uint8", data=b"\x01")
    header = msg.SerializeToString()
    head = struct.pack("<4sI", b"FCF1", len(header)) + header
    data = head + bytes(-len(head) % ALIGN)
    with pytest.raises(ValidationError, match="inline data"):
        read_task(data)


@pytest.mark.parametrize(
    "record",
    [
        ArrayRecord(),
        ArrayRecord({"empty": np.zeros(0)}),
        _task().params,
        ArrayRecord({"big": np.random.default_rng(1).normal(size=(300, 70)).astype(np.float32)}),
    ],
)
def test_encoded_parts_equal_the_protobuf_encoding_byte_for_byte(record: ArrayRecord) -> None:
    from fedcare.transport.arrays_wire import encode_arrays, encode_arrays_parts

    parts = encode_arrays_parts(record)
    joined = b"".join(bytes(p) for p in parts.parts)
    assert joined == encode_arrays(record) and parts.size == len(joined)


def test_a_records_digest_is_computed_once_and_forgotten_with_it(tmp_path: Path) -> None:
    import gc
    import io

    from fedcare.transport import framed as framed_module

    reply = Reply("s", 1, "a", "fit", arrays=ArrayRecord({"w": np.arange(10.0)}), num_samples=1)
    first = frame_reply(reply).sha256()
    assert framed_module._known(reply) == first  # the audit's hash, kept for the upload
    out = io.BytesIO()
    assert frame_reply(reply).write(out) == first == hashlib.sha256(out.getvalue()).hexdigest()
    assert write_file(frame_reply(reply), tmp_path / "r", digest=False) == ""  # a hand-over
    other = Reply("s", 1, "a", "fit", arrays=ArrayRecord({"w": np.arange(10.0)}), num_samples=1)
    assert framed_module._known(other) is None  # an equal record is another record
    key = id(reply)
    del reply
    gc.collect()
    assert key not in framed_module._DIGESTS
