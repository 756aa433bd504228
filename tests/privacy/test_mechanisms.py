import numpy as np
import pytest
from scipy import stats

from fedcare.errors import ConfigError
from fedcare.privacy.mechanisms import (
    add_gaussian_noise,
    noise_multiplier_from_std,
    noise_std,
)
from fedcare.records.arrays import ArrayRecord


def test_noise_std_and_multiplier_are_inverse() -> None:
    assert noise_std(1.5, 0.2) == pytest.approx(0.3)
    assert noise_multiplier_from_std(noise_std(1.5, 0.2), 0.2) == pytest.approx(1.5)


def test_noise_has_the_configured_scale_ks_test() -> None:
    # 20,000 draws; the KS test against N(0, 0.7^2) must not reject at the 0.1% level, and the
    # sample std must be within 2% of 0.7 (its standard error is about 0.5%).
    zeros = ArrayRecord({"w": np.zeros((100, 100)), "b": np.zeros(10_000)})
    noised = add_gaussian_noise(zeros, 0.7, np.random.default_rng(3))
    draws = noised.flatten()
    assert stats.kstest(draws, "norm", args=(0.0, 0.7)).pvalue > 1e-3
    assert np.std(draws) == pytest.approx(0.7, rel=0.02)


def test_noise_leaves_input_unchanged_and_keeps_dtype() -> None:
    arrays = ArrayRecord({"w": np.ones(5, dtype=np.float32)})
    out = add_gaussian_noise(arrays, 1.0, np.random.default_rng(0))
    assert np.array_equal(arrays["w"], np.ones(5))
    assert out["w"].dtype == np.float32
    assert not np.array_equal(out["w"], arrays["w"])


def test_same_generator_state_gives_same_noise() -> None:
    arrays = ArrayRecord({"w": np.zeros(8)})
    a = add_gaussian_noise(arrays, 1.0, np.random.default_rng(11))
    b = add_gaussian_noise(arrays, 1.0, np.random.default_rng(11))
    assert a == b


@pytest.mark.parametrize("std", [-1.0, float("nan"), float("inf")])
def test_bad_std_is_named(std: float) -> None:
    with pytest.raises(ConfigError, match="std"):
        add_gaussian_noise(ArrayRecord({"w": np.zeros(2)}), std, np.random.default_rng(0))


def test_bad_clip_norm_is_named() -> None:
    with pytest.raises(ConfigError, match="clip_norm must be a finite number > 0, got 0"):
        noise_std(1.0, 0)
