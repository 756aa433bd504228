"""An ArraysMessage read in place (fedcare.transport.arrays_mapped) agrees with protobuf."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.transport.arrays_mapped import read_arrays
from fedcare.transport.arrays_wire import Limits, decode_arrays, encode_arrays
from fedcare.transport.grpc import fedcare_pb2 as pb

DTYPES = ["float32", "float64", "float16", "int8", "uint16", "int64", "bool"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), min_size=0, max_size=3)),
        max_size=5,
    ),
    st.integers(0, 2**31),
)
def test_it_reads_what_protobuf_writes(spec: list[tuple[str, list[int]]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    record = ArrayRecord(
        {
            f"a{i}": (
                rng.integers(0, 2, size=shape) if dtype == "bool" else rng.normal(size=shape) * 9
            ).astype(dtype)
            for i, (dtype, shape) in enumerate(spec)
        }
    )
    data = encode_arrays(record)
    assert read_arrays(data) == decode_arrays(data) == record


def test_arrays_are_views_of_a_mapped_file(tmp_path: Path) -> None:
    record = ArrayRecord({"w": np.arange(1 << 16, dtype=np.float32)})
    path = tmp_path / "params"
    path.write_bytes(encode_arrays(record))
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    read = read_arrays(mapped)
    assert read == record and not read["w"].flags.owndata and not read["w"].flags.writeable


def test_unpacked_shapes_and_fields_in_another_order_are_read() -> None:
    msg = pb.ArraysMessage(version=1, end=0xFEDCA7E1)
    msg.record.arrays.add(name="w", dtype="int8", shape=[2, 3], data=bytes(range(6)))
    canonical = msg.SerializeToString()
    # end marker first, then version, then the record: the same message
    end = b"\xa5\x06" + (0xFEDCA7E1).to_bytes(4, "little")
    shuffled = end + b"\x08\x01" + canonical[2 : -len(end)]
    assert read_arrays(shuffled)["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-3], "truncated"),
        (lambda d: d[:-6], "lacks its end marker"),
        (lambda d: b"\x08\x02" + d[2:], "message version 2"),
        (lambda d: d + b"\x18\x01", "unknown field 3"),
        (lambda d: b"", "empty"),
    ],
)
def test_malformed_messages_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = encode_arrays(ArrayRecord({"w": np.ones(3, np.float32)}))
    with pytest.raises(ValidationError, match=message):
        read_arrays(mutate(data))


def test_a_size_that_does_not_match_the_shape_and_bad_values_are_refused() -> None:
    msg = pb.ArraysMessage(version=1, end=0xFEDCA7E1)
    msg.record.arrays.add(name="w", dtype="float32", shape=[3], data=bytes(8))
    with pytest.raises(ValidationError, match=r"\(12 bytes\) but carries 8 bytes"):
        read_arrays(msg.SerializeToString())
    bad_bool = pb.ArraysMessage(version=1, end=0xFEDCA7E1)
    bad_bool.record.arrays.add(name="m", dtype="bool", shape=[2], data=b"\x01\x05")
    with pytest.raises(ValidationError, match="bytes other than 0 and 1"):
        read_arrays(bad_bool.SerializeToString())
    nan = encode_arrays(ArrayRecord({"w": np.array([1.0, np.nan])}))
    with pytest.raises(ValidationError, match="NaN or infinite"):
        read_arrays(nan, limits=Limits(require_finite=True))
    other = pb.ArraysMessage(version=1, end=0xFEDCA7E1)
    other.record.arrays.add(name="w", dtype="complex64", shape=[1], data=bytes(8))
    with pytest.raises(ValidationError, match="allowed dtypes"):
        read_arrays(other.SerializeToString())


@pytest.mark.slow
def test_a_record_beyond_protobufs_2_gib_is_written_and_read_in_place(tmp_path: Path) -> None:
    """A 1B-parameter checkpoint is more than protobuf's 2 GiB: it is written in the same wire
    format and read in place, while protobuf's parser refuses it by its size."""
    from fedcare.transport.arrays_wire import PROTOBUF_MAX_BYTES, encode_arrays_parts

    n = (PROTOBUF_MAX_BYTES + (64 << 20)) // 4  # 2.06 GiB of float32
    sparse = tmp_path / "big.raw"
    with sparse.open("wb") as f:
        f.truncate(n * 4)  # a sparse file: zeros the disk does not hold
    big = np.memmap(sparse, dtype=np.float32, mode="r+", shape=(n,))
    big[-3:] = [1.0, 2.0, 3.0]
    record = ArrayRecord({"w": big, "b": np.arange(3, dtype=np.float32)}, copy=False)
    path = tmp_path / "checkpoint"
    with path.open("wb") as out:
        for part in encode_arrays_parts(record).parts:
            out.write(part)
    sparse.unlink()
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    back = read_arrays(mapped)
    assert back["w"].shape == (n,) and list(back["w"][-3:]) == [1.0, 2.0, 3.0]
    assert not back["w"].flags.owndata and list(back["b"]) == [0.0, 1.0, 2.0]
    with pytest.raises(ValidationError, match="above the limit"):
        decode_arrays(memoryview(mapped))  # type: ignore[arg-type]  # refused before reading
