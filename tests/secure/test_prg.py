import numpy as np
import pytest

from fedcare.errors import ValidationError
from fedcare.secure.secagg.prg import MaskBuffer, prg_uint64


def test_prg_is_deterministic_and_prefix_consistent() -> None:
    seed = bytes(range(32))
    a = prg_uint64(seed, 1000)
    assert a.dtype == np.uint64 and a.shape == (1000,)
    assert np.array_equal(a, prg_uint64(seed, 1000))
    assert np.array_equal(a[:10], prg_uint64(seed, 10))
    assert not np.array_equal(a, prg_uint64(bytes(31) + b"\x01", 1000))


def test_prg_output_looks_uniform() -> None:
    x = prg_uint64(b"k" * 32, 200_000)
    top = (x >> np.uint64(60)).astype(int)  # 16 buckets from the top bits
    counts = np.bincount(top, minlength=16)
    expected = len(x) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50  # 15 dof: p < 1e-5 beyond this
    assert abs(float((x & np.uint64(1)).mean()) - 0.5) < 0.01


def test_prg_rejects_bad_seed() -> None:
    with pytest.raises(ValidationError, match="expected 32"):
        prg_uint64(b"x", 4)


def test_mask_buffer_gives_the_prg_stream_and_reuses_its_memory() -> None:
    buf = MaskBuffer(1001)
    seeds = [bytes([i]) * 32 for i in range(5)]
    first = buf.expand(seeds[0])
    assert np.array_equal(first, prg_uint64(seeds[0], 1001))
    for seed in seeds[1:]:
        got = buf.expand(seed)
        assert got.dtype == np.uint64 and got.shape == (1001,)
        assert np.array_equal(got, prg_uint64(seed, 1001))
        assert np.shares_memory(got, first)  # overwritten in place, no new allocation
    assert MaskBuffer(0).expand(seeds[0]).shape == (0,)


def test_mask_buffer_rejects_bad_seed_and_length() -> None:
    with pytest.raises(ValidationError, match="expected 32"):
        MaskBuffer(4).expand(b"x")
    with pytest.raises(ValidationError, match="-1"):
        MaskBuffer(-1)
