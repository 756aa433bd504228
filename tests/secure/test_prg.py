import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import fedcare.secure.secagg.prg as prg
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


def _aes_ctr_words(seed: bytes, length: int) -> np.ndarray:
    """The reference: AES-256-CTR from a zero counter block, read as little-endian words."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 6, 1001, 70_000, 2**15 + 5])
def test_prg_is_the_aes_ctr_keystream_bit_for_bit(length: int) -> None:
    # the GCM fast path takes over from the third block: lengths around it and well past it;
    # 2^15 + 5 values end 8 bytes into a second 256 kB piece
    seed = bytes(range(100, 132))
    want = _aes_ctr_words(seed, length)
    assert np.array_equal(prg_uint64(seed, length), want)
    assert np.array_equal(MaskBuffer(length).expand(seed), want)  # in pieces past 256 kB
    assert np.array_equal(MaskBuffer(length, one_call=True).expand(seed), want)


def test_prg_past_gcm_s_counter_range_falls_back_to_ctr(monkeypatch: pytest.MonkeyPatch) -> None:
    # a vector of 2^32 blocks is too big for a test: shrink the limit and see the CTR path alone
    monkeypatch.setattr(prg, "_GCM_MAX", 64)
    seed = bytes(range(32))
    for length in (8, 9, 500):  # at the limit (GCM still) and beyond it (CTR only)
        assert np.array_equal(prg_uint64(seed, length), _aes_ctr_words(seed, length))
