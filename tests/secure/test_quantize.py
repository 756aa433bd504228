import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.errors import ConfigError, ValidationError
from fedcare.secure.secagg.quantize import QuantSpec, dequantize_sum, error_bound, quantize


@settings(max_examples=40, deadline=None)
@given(
    clip=st.floats(0.01, 1e6),
    bits=st.integers(4, 48),
    n=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_within_stated_bound(clip: float, bits: int, n: int, seed: int) -> None:
    spec = QuantSpec(clip=clip, bits=bits)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-clip, clip, size=(n, 64))
    total = np.zeros(64, dtype=np.uint64)
    for x in xs:
        total += quantize(x, spec, os.urandom)
    err = np.abs(dequantize_sum(total, n, spec) - xs.sum(axis=0)).max()
    assert err <= error_bound(spec, n)


def test_stochastic_rounding_is_unbiased_and_clips() -> None:
    spec = QuantSpec(clip=1.0, bits=2)  # step 2/3: coarse
    x = np.full(100_000, 0.1)
    q = quantize(x, spec, os.urandom)
    assert set(np.unique(q).tolist()) <= {0, 1, 2, 3}
    assert abs(dequantize_sum(q.sum(dtype=np.uint64)[None], len(x), spec)[0] / len(x) - 0.1) < 0.01
    big = quantize(np.array([5.0, -5.0]), spec, os.urandom)
    assert big.tolist() == [3, 0]


def test_bad_specs_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="bits must be in"):
        QuantSpec(bits=63)
    with pytest.raises(ConfigError, match="clip must be"):
        QuantSpec(clip=0.0)
    with pytest.raises(ValidationError, match="NaN"):
        quantize(np.array([np.nan]), QuantSpec(), os.urandom)
    spec = QuantSpec(bits=62)
    with pytest.raises(ValidationError, match="num_sites=5"):
        dequantize_sum(np.zeros(1, dtype=np.uint64), 5, spec)


def _quantize_reference(
    x: np.ndarray, spec: QuantSpec, entropy: Callable[[int], bytes]
) -> np.ndarray:
    """The straightforward expression quantize computes in place."""
    values = np.asarray(x, dtype=np.float64)
    scaled = (np.clip(values, -spec.clip, spec.clip) + spec.clip) / spec.step
    low = np.floor(scaled)
    u = np.frombuffer(entropy(8 * values.size), dtype="<u8").reshape(values.shape) / 2.0**64
    return np.clip(low + (u < (scaled - low)), 0, spec.levels).astype(np.uint64)


@pytest.mark.parametrize("shape", [(), (1,), (1000,), (7, 3)])
def test_quantize_in_place_is_the_reference_bit_for_bit(shape: tuple[int, ...]) -> None:
    spec = QuantSpec(clip=2.0, bits=20)
    x = np.random.default_rng(3).normal(0, 1.5, shape)  # some beyond the clip
    before = x.copy()
    got = quantize(x, spec, np.random.default_rng(9).bytes)
    want = _quantize_reference(x, spec, np.random.default_rng(9).bytes)
    assert got.dtype == np.uint64 and got.shape == np.shape(x)
    assert np.array_equal(got, want)
    assert np.array_equal(x, before)  # the input is left alone
