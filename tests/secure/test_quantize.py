import os

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
