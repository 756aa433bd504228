"""Compressed updates really travel smaller: the encoded reply's bytes per method, and the
coordinator decodes exactly what the site encoded."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.aggregation.compress_codec import decode, encode
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.transport.codec import decode_reply, encode_reply

SHAPES = {"conv": (32, 16, 3, 3), "dense": (400, 250), "bias": (250,)}  # 104,858 float32


def _update() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord({k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()})


def _reply(arrays: ArrayRecord) -> Reply:
    return Reply(
        "study",
        3,
        "site-a",
        "fit",
        arrays=arrays,
        num_samples=120,
        metrics={"loss": 0.5},
        info={"num_rows": "120"},
    )


@pytest.mark.parametrize(
    ("method", "ratio", "expected"),
    [
        ("fp16", 1.0, 0.5),  # 2 of 4 bytes
        ("bf16", 1.0, 0.5),
        ("int8", 1.0, 0.25),  # 1 of 4 bytes, plus one float32 scale per array
        ("topk", 0.1, 0.1 * (4 + 4) / 4),  # ratio x (uint32 index + float32 value)
        ("topk", 0.01, 0.01 * (4 + 4) / 4),
    ],
)
def test_encoded_reply_size_is_the_methods_share(
    method: str, ratio: float, expected: float
) -> None:
    update = _update()
    plain = encode_reply(_reply(update))
    wire = encode(update, method, ratio)
    packed = encode_reply(_reply(wire))
    share = len(packed) / len(plain)
    assert share == pytest.approx(expected, rel=0.02, abs=0.001)
    # what the coordinator reads back decodes to the same update the site meant
    received = decode_reply(packed)
    assert received.arrays == wire
    back = decode("site-a", received.arrays, update, method, ratio)
    assert back.shapes == update.shapes and all(v.dtype == np.float32 for v in back.values())


def test_compressed_dtypes_are_what_travels() -> None:
    wire = encode(_update(), "int8")
    received = decode_reply(encode_reply(_reply(wire)))
    assert {str(v.dtype) for k, v in received.arrays.items() if k.startswith("values/")} == {"int8"}
    assert received.arrays["scale/dense"].dtype == np.float32
