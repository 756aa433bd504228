"""The wire codec: round trips for every dtype and shape, and a clear error for every bad input."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from fedcare.errors import TransferIncompleteError, ValidationError
from fedcare.records import ArrayRecord, Reply, ReplyError, Task
from fedcare.transport import codec
from fedcare.transport.codec import Limits
from fedcare.transport.grpc import fedcare_pb2 as pb

DTYPES = sorted(codec.ALLOWED_DTYPES)
NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)  # no surrogates


def same(a: ArrayRecord, b: ArrayRecord) -> bool:
    """Bitwise equality (NaN included), same names in the same order, dtypes and shapes."""
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a
    )


@st.composite
def records(draw: st.DrawFn, max_arrays: int = 4) -> ArrayRecord:
    names = draw(st.lists(NAMES, max_size=max_arrays, unique=True))
    out = {}
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        out[name] = draw(arrays(dtype, shape))
    return ArrayRecord(out)


def make_task(**kw: object) -> Task:
    base: dict[str, object] = {
        "study_id": "heart-1",
        "round": 3,
        "site_id": "cleveland",
        "kind": "fit",
        "params": ArrayRecord({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": 0.5}),
        "config": {"lr": 0.1, "epochs": 2, "proximal": True, "opt": "sgd", "big": -(2**63)},
        "arrays": {"control": ArrayRecord({"w": np.ones((2, 3))})},
        "plan": {"model": "logistic", "layers": [1, 2], "é": {"nested": None}},
        "pipeline": {"layers": [{"type": "clip", "norm": 1.0}]},
    }
    base.update(kw)
    return Task(**base)  # type: ignore[arg-type]


def make_reply(**kw: object) -> Reply:
    base: dict[str, object] = {
        "study_id": "heart-1",
        "round": 3,
        "site_id": "cleveland",
        "kind": "fit",
        "arrays": ArrayRecord({"w": np.full((2, 3), 0.25, dtype=np.float32)}),
        "num_samples": 120,
        "metrics": {"loss": 0.3, "auroc": float("nan")},
    }
    base.update(kw)
    return Reply(**base)  # type: ignore[arg-type]


# Round trips ----------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(records())
def test_arrays_round_trip_for_every_dtype_and_shape(record: ArrayRecord) -> None:
    back = codec.decode_arrays(codec.encode_arrays(record))
    assert same(back, record)
    assert all(not v.flags.writeable for v in back.values())


@settings(max_examples=60, deadline=None)
@given(params=records(), extra=st.dictionaries(NAMES, records(2), max_size=2), name=NAMES)
def test_task_round_trip(params: ArrayRecord, extra: dict[str, ArrayRecord], name: str) -> None:
    task = make_task(params=params, arrays=extra, study_id=name, config={name: name})
    back = codec.decode_task(codec.encode_task(task))
    assert (back.study_id, back.round, back.site_id, back.kind) == (name, 3, "cleveland", "fit")
    assert same(back.params, params)
    assert list(back.arrays) == list(extra) and all(same(back.arrays[k], extra[k]) for k in extra)
    assert back.config == {name: name} and back.plan == task.plan


def test_task_scalars_plan_and_pipeline_round_trip() -> None:
    task = make_task()
    back = codec.decode_task(codec.encode_task(task))
    assert back.config == task.config
    assert type(back.config["epochs"]) is int and type(back.config["proximal"]) is bool
    assert back.plan == task.plan and back.pipeline == task.pipeline
    assert back.params == task.params and back.arrays["control"] == task.arrays["control"]
    assert back.version == task.version


@settings(max_examples=60, deadline=None)
@given(arrays_=records(), n=st.integers(0, 2**62), metrics=st.dictionaries(NAMES, st.floats()))
def test_reply_round_trip(arrays_: ArrayRecord, n: int, metrics: dict[str, float]) -> None:
    reply = make_reply(arrays=arrays_, num_samples=n, metrics=metrics)
    back = codec.decode_reply(codec.encode_reply(reply))
    assert same(back.arrays, arrays_) and back.num_samples == n and back.error is None
    assert {k: np.float64(v).tobytes() for k, v in back.metrics.items()} == {
        k: np.float64(v).tobytes() for k, v in metrics.items()
    }


def test_error_reply_and_empty_record_round_trip() -> None:
    reply = make_reply(arrays=ArrayRecord(), metrics={}, error=ReplyError("refused", "no plan ✗"))
    back = codec.decode_reply(codec.encode_reply(reply))
    assert back == reply and back.error == ReplyError("refused", "no plan ✗")
    assert codec.decode_arrays(codec.encode_arrays(ArrayRecord())) == ArrayRecord()


def test_reply_info_round_trips_and_non_strings_are_refused() -> None:
    info = {"dataset_fingerprint": "sha256:ab12", "plan_hash": "9f"}
    reply = make_reply(arrays=ArrayRecord(), metrics={}, info=info)
    assert codec.decode_reply(codec.encode_reply(reply)).info == info
    with pytest.raises(ValidationError, match=r"info 'rows' must map a string to a string"):
        make_reply(arrays=ArrayRecord(), metrics={}, info={"rows": 12})


def test_a_resent_tasks_submission_travels_and_names_it_in_its_id() -> None:
    from dataclasses import replace

    from fedcare.records.messages import split_task_key
    from fedcare.transport.framed import frame_reply, frame_task, read_reply, read_task

    task = replace(make_task(), submission=7)
    assert task.task_id.endswith("#7") and make_task().task_id == task.task_id[:-2]
    assert split_task_key(task.task_id) == (task.study_id, task.round, task.kind, task.site_id, 7)
    for back in (
        codec.decode_task(codec.encode_task(task)),
        read_task(frame_task(task).to_bytes()),
    ):
        assert back.submission == 7 and back.task_id == task.task_id
    reply = make_reply(arrays=ArrayRecord(), metrics={}).answering(task)
    assert reply.submission == 7
    for answer in (
        codec.decode_reply(codec.encode_reply(reply)),
        read_reply(frame_reply(reply).to_bytes()),
    ):
        assert answer.submission == 7
    assert Reply.failure(task, "k", "m").submission == 7
    with pytest.raises(ValidationError, match="submission"):
        replace(task, submission=-1)


def test_zero_d_and_empty_arrays_round_trip() -> None:
    record = ArrayRecord({"s": np.float16(2.5), "e": np.zeros((0, 3), np.int64), "t": True})
    back = codec.decode_arrays(codec.encode_arrays(record))
    assert same(back, record) and back["s"].shape == () and back["e"].shape == (0, 3)


def test_non_contiguous_and_big_endian_inputs_travel_as_little_endian() -> None:
    wide = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    back = codec.decode_arrays(codec.encode_arrays(ArrayRecord({"x": wide})))
    assert back["x"].dtype == np.dtype("int32") and np.array_equal(back["x"], wide)
    raw = pb.ArraysMessage.FromString(codec.encode_arrays(ArrayRecord({"x": wide})))
    assert raw.record.arrays[0].data == np.ascontiguousarray(wide, dtype="<i4").tobytes()


# Malformed messages -----------------------------------------------------------------------------
def test_every_truncation_of_a_message_is_refused() -> None:
    data = codec.encode_task(make_task(arrays={}))
    for cut in range(len(data)):
        with pytest.raises(ValidationError, match=r"truncated|corrupted|empty|version"):
            codec.decode_task(data[:cut])


@pytest.mark.parametrize("junk", [b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f", b"hello world"])
def test_garbage_is_refused(junk: bytes) -> None:
    with pytest.raises(ValidationError, match="task message"):
        codec.decode_task(junk)


def test_wrong_message_version_is_refused() -> None:
    msg = pb.TaskMessage.FromString(codec.encode_task(make_task()))
    msg.version = 2
    with pytest.raises(ValidationError, match="message version 2; this fedcare understands 1"):
        codec.decode_task(msg.SerializeToString())


def _arrays_message(dtype: str, shape: list[int], data: bytes) -> bytes:
    msg = pb.ArraysMessage(version=1, end=codec.END_MARKER)
    msg.record.arrays.add(name="w", dtype=dtype, shape=shape, data=data)
    return msg.SerializeToString()


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "match"),
    [
        ("object", [1], b"\0" * 8, "dtype 'object'"),
        ("complex128", [1], b"\0" * 16, "dtype 'complex128'"),
        ("<f4", [1], b"\0" * 4, "dtype '<f4'"),
        ("float32", [2, 3], b"\0" * 20, r"shape \(2, 3\).*24 bytes.*carries 20 bytes"),
        ("float32", [], b"", r"shape \(\).*4 bytes.*carries 0"),
        ("int8", [-1, 2], b"", "negative dimension"),
        ("int8", [1] * 40, b"\0", "40 dimensions"),
        ("bool", [2], b"\x01\x02", "bytes other than 0 and 1"),
    ],
)
def test_bad_arrays_are_refused(dtype: str, shape: list[int], data: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        codec.decode_arrays(_arrays_message(dtype, shape, data))


def test_limits_are_enforced_before_building() -> None:
    data = codec.encode_arrays(ArrayRecord({f"a{i}": np.zeros(100) for i in range(5)}))
    with pytest.raises(ValidationError, match=r"above the limit 1000"):
        codec.decode_arrays(data, limits=Limits(max_payload_bytes=1000))
    with pytest.raises(ValidationError, match="5 arrays, above the limit 4"):
        codec.decode_arrays(data, limits=Limits(max_arrays=4))
    with pytest.raises(ValidationError, match="NaN or infinite"):
        nan = codec.encode_arrays(ArrayRecord({"w": [1.0, np.nan]}))
        codec.decode_arrays(nan, limits=Limits(require_finite=True))
    with pytest.raises(ValidationError, match="above the limit 3"):
        data = codec.encode_arrays(ArrayRecord({"long": 1}))
        codec.decode_arrays(data, limits=Limits(max_name_chars=3))


def test_duplicate_names_are_refused() -> None:
    msg = pb.ArraysMessage(version=1, end=codec.END_MARKER)
    for _ in range(2):
        msg.record.arrays.add(name="w", dtype="int8", shape=[1], data=b"\0")
    with pytest.raises(ValidationError, match="two arrays named 'w'"):
        codec.decode_arrays(msg.SerializeToString())


def _edited_task(**fields: object) -> bytes:
    msg = pb.TaskMessage.FromString(codec.encode_task(make_task()))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg.SerializeToString()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "train"}, "kind 'train'"),
        ({"round": -1}, "round -1"),
        ({"site_id": ""}, "site_id must be a non-empty"),
        ({"plan_json": "[1, 2]"}, "plan must be a JSON object, got list"),
        ({"plan_json": '{"a": NaN}'}, "plan is not valid JSON"),
        ({"pipeline_json": "{"}, "pipeline is not valid JSON"),
        ({"plan_json": "[" * 100_000 + "]" * 100_000}, "plan is not valid JSON"),
    ],
)
def test_bad_task_fields_are_refused(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        codec.decode_task(_edited_task(**fields))


def test_unset_config_value_and_too_many_records_are_refused() -> None:
    msg = pb.TaskMessage.FromString(codec.encode_task(make_task()))
    msg.config["empty"].Clear()
    with pytest.raises(ValidationError, match=r"config\['empty'\] has no value"):
        codec.decode_task(msg.SerializeToString())
    data = codec.encode_task(make_task(arrays={f"r{i}": ArrayRecord() for i in range(3)}))
    with pytest.raises(ValidationError, match="3 extra records, above the limit 2"):
        codec.decode_task(data, limits=Limits(max_records=2))


def test_bad_reply_fields_are_refused() -> None:
    msg = pb.ReplyMessage.FromString(codec.encode_reply(make_reply()))
    msg.num_samples = -5
    with pytest.raises(ValidationError, match=r"site 'cleveland'.*num_samples=-5"):
        codec.decode_reply(msg.SerializeToString())
    msg.num_samples, msg.kind = 5, "steal"
    with pytest.raises(ValidationError, match="kind 'steal'"):
        codec.decode_reply(msg.SerializeToString())
    with pytest.raises(ValidationError, match=r"not a valid protobuf|version"):
        codec.decode_reply(codec.encode_task(make_task()))


def test_encoding_refuses_what_cannot_travel() -> None:
    with pytest.raises(ValidationError, match="array 'z' has dtype complex128"):
        codec.encode_arrays(ArrayRecord({"z": np.ones(2, dtype=complex)}))
    with pytest.raises(ValidationError, match=r"config\['n'\] = 18446744073709551616"):
        codec.encode_task(make_task(config={"n": 2**64}))
    with pytest.raises(ValidationError, match="plan is not JSON-serializable"):
        codec.encode_task(make_task(plan={"x": object()}))
    with pytest.raises(ValidationError, match="plan is not JSON-serializable"):
        codec.encode_task(make_task(plan={"x": float("inf")}))
    with pytest.raises(ValidationError, match="must be bytes"):
        codec.decode_arrays("text")  # type: ignore[arg-type]


def test_no_pickle_in_the_transport() -> None:
    for path in Path(codec.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in names if "pickle" in m}, path
        assert "allow_pickle" not in path.read_text(), path


# Chunks -----------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(payload=st.binary(max_size=3000), size=st.integers(1, 700))
def test_chunk_and_assemble_round_trip(payload: bytes, size: int) -> None:
    pieces = list(codec.chunk(payload, transfer_id="t1", chunk_size=size))
    assert len(pieces) == max(1, -(-len(payload) // size))
    assert all(len(p.data) <= size for p in pieces)
    assert all(p.sha256 == hashlib.sha256(payload).digest() for p in pieces)
    assert codec.assemble(pieces, max_bytes=len(payload)) == payload


def _pieces(n: int = 4) -> list[pb.Chunk]:
    return list(codec.chunk(bytes(range(256)) * n, transfer_id="xfer", chunk_size=256))


def test_reordered_missing_and_repeated_chunks_are_refused() -> None:
    p = _pieces()
    with pytest.raises(ValidationError, match="expected chunk 1 of 4, got chunk 2"):
        codec.assemble([p[0], p[2], p[1], p[3]], max_bytes=1 << 20)
    with pytest.raises(ValidationError, match="expected chunk 0 of 4, got chunk 1"):
        codec.assemble(p[1:], max_bytes=1 << 20)
    with pytest.raises(ValidationError, match="expected chunk 2 of 4, got chunk 1"):
        codec.assemble([p[0], p[1], p[1], p[2], p[3]], max_bytes=1 << 20)
    with pytest.raises(TransferIncompleteError, match="truncated: got 3 of 4 chunks, 768 of 1024"):
        codec.assemble(p[:3], max_bytes=1 << 20)  # a cut link: an incomplete transfer
    with pytest.raises(ValidationError, match="no chunks"):
        codec.assemble([], max_bytes=1 << 20)


def test_corrupted_oversized_and_mixed_transfers_are_refused() -> None:
    p = _pieces()
    p[2].data = bytes([p[2].data[0] ^ 1]) + p[2].data[1:]
    with pytest.raises(ValidationError, match="xfer is corrupted: its SHA-256 does not match"):
        codec.assemble(p, max_bytes=1 << 20)
    with pytest.raises(ValidationError, match="declares 1024 bytes, above the limit 1000"):
        codec.assemble(_pieces(), max_bytes=1000)
    p = _pieces()
    p[3].data += b"extra"
    with pytest.raises(ValidationError, match="oversized: more than the declared 1024"):
        codec.assemble(p, max_bytes=1 << 20)
    p = _pieces()
    p[1].transfer_id = "other"
    with pytest.raises(ValidationError, match="chunk 1 of transfer xfer disagrees"):
        codec.assemble(p, max_bytes=1 << 20)
    p = _pieces()
    p[0].total = 5000
    with pytest.raises(ValidationError, match="declares 5000 chunks for 1024 bytes"):
        codec.assemble(p, max_bytes=1 << 20)


def test_the_size_declared_before_the_chunks_must_match_theirs() -> None:
    assert codec.assemble(_pieces(), max_bytes=1 << 20, size=1024) == bytes(range(256)) * 4
    with pytest.raises(ValidationError, match="declares 1024 bytes in its chunks but 10 bytes"):
        codec.assemble(_pieces(), max_bytes=1 << 20, size=10)


def test_chunk_arguments_are_checked_eagerly() -> None:
    with pytest.raises(ValidationError, match="chunk_size"):
        codec.chunk(b"x", transfer_id="t", chunk_size=0)
    with pytest.raises(ValidationError, match="transfer_id"):
        codec.chunk(b"x", transfer_id="")
    assert len(codec.new_transfer_id()) == 32


def test_a_large_record_travels_through_chunks() -> None:
    record = ArrayRecord({"w": np.random.default_rng(0).standard_normal(2_500_000)})  # 20 MB
    data = codec.encode_arrays(record)
    pieces = codec.chunk(data, transfer_id="big")
    back = codec.decode_arrays(codec.assemble(pieces, max_bytes=len(data)))
    assert back == record
