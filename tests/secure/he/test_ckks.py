"""The CKKS backend: sums within the derived error bound, public contexts, packing cost."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tenseal", reason="privacy mode 'encrypted' needs the 'he' extra (tenseal)")

from fedcare.errors import AggregationError, ValidationError
from fedcare.secure.he.ckks import MAX_ABS, CKKSBackend, error_bound


@pytest.fixture(scope="module")
def secret() -> CKKSBackend:
    return CKKSBackend.keygen()


@pytest.fixture(scope="module")
def public(secret: CKKSBackend) -> CKKSBackend:
    return CKKSBackend.public_from_bytes(secret.public_bytes())


def test_error_bound_is_the_documented_one() -> None:
    # k * (8 sqrt2 s N + 6 s sqrt N + 16 s sqrt(2N/3 N) + N/2) / 2^40, s = 3.2, N = 4096
    assert error_bound(1) == pytest.approx(322_774 / 2**40, rel=1e-3)
    assert error_bound(100) == pytest.approx(100 * error_bound(1))
    assert error_bound(100) < 3e-5


def test_sum_of_100_sites_decrypts_within_the_bound(
    secret: CKKSBackend, public: CKKSBackend
) -> None:
    rng = np.random.default_rng(4)
    length = 2 * secret.slots + 17  # three ciphertexts, the last partly filled
    vectors = [rng.uniform(-MAX_ABS, MAX_ABS, length) / 10 for _ in range(100)]
    total = public.sum(secret.encrypt(v) for v in vectors)  # the coordinator adds, blind
    got = secret.decrypt(total, length)
    want = np.sum(vectors, axis=0)
    err = np.abs(got - want).max()
    assert err <= error_bound(100), err
    assert err / np.abs(want).max() < 1e-5  # the relative precision the mode promises


def test_public_context_cannot_decrypt(secret: CKKSBackend, public: CKKSBackend) -> None:
    import tenseal as ts

    cts = secret.encrypt(np.arange(5.0))
    assert secret.has_secret_key and not public.has_secret_key
    with pytest.raises(ValidationError, match="no secret key"):
        public.decrypt(cts, 5)
    raw = ts.context_from(public.public_bytes())
    assert not raw.is_private()
    with pytest.raises(ValueError, match="secret"):  # TenSEAL itself refuses too
        ts.ckks_vector_from(raw, cts[0]).decrypt()
    with pytest.raises(ValidationError, match="holds the secret key"):
        CKKSBackend.public_from_bytes(secret.secret_bytes())
    with pytest.raises(ValidationError, match="no secret key to serialize"):
        public.secret_bytes()
    assert public.fingerprint() == secret.fingerprint()


def test_packing_fills_every_slot(secret: CKKSBackend) -> None:
    """Bytes per value: one ciphertext per N/2 values, < 8x float32 once the slots are full."""
    for length, cts_expected in [(13, 1), (secret.slots, 1), (100_001, 49)]:
        cts = secret.encrypt(np.full(length, 0.5))
        assert len(cts) == cts_expected == secret.num_ciphertexts(length)
        expansion = sum(map(len, cts)) / (4 * length)
        full = length >= secret.slots
        # 2 polynomials x N 58-bit coefficients (64-bit words, zstd) per N/2 slots + header
        assert (7.5 < expansion < 8.0) if full else expansion > 1000, (length, expansion)


def test_encrypt_refuses_values_that_would_overflow(secret: CKKSBackend) -> None:
    with pytest.raises(ValidationError, match=r"\|value\| 5000 exceeds 655.36"):
        secret.encrypt(np.array([1.0, -5000.0]))
    with pytest.raises(ValidationError, match="non-finite"):
        secret.encrypt(np.array([np.nan]))


def test_malformed_ciphertexts_are_named(secret: CKKSBackend, public: CKKSBackend) -> None:
    good = secret.encrypt(np.ones(3))
    with pytest.raises(AggregationError, match="vector 1 ciphertext 0 is not a CKKS ciphertext"):
        public.sum([good, [b"garbage"]])
    with pytest.raises(AggregationError, match="has 2 ciphertexts, expected 1"):
        public.sum([good, good * 2])
    with pytest.raises(ValidationError, match="2 ciphertexts cannot hold 3 values"):
        secret.decrypt(good * 2, 3)
