"""The deployment noise source: OS-CSPRNG draws with the right distributions and shapes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedcare.privacy.mechanisms import add_gaussian_noise, system_rng
from fedcare.privacy.system_random import SystemRandom
from fedcare.records import ArrayRecord


def test_it_is_a_numpy_generator_with_fresh_draws() -> None:
    rng = system_rng()
    assert isinstance(rng, SystemRandom) and isinstance(rng, np.random.Generator)
    assert not np.array_equal(rng.normal(size=8), system_rng().normal(size=8))
    assert rng.permutation(5).tolist() != []  # other methods still work (PCG64 from OS entropy)


def test_distributions_pass_goodness_of_fit_tests() -> None:
    rng = SystemRandom()
    uniforms = rng.random(20_000)
    assert uniforms.min() > 0 and uniforms.max() < 1
    assert stats.kstest(uniforms, "uniform").pvalue > 1e-4
    gauss = rng.normal(3.0, 2.0, size=20_000)
    assert stats.kstest((gauss - 3.0) / 2.0, "norm").pvalue > 1e-4
    lap = rng.laplace(0.0, 0.5, size=20_000)
    assert stats.kstest(lap / 0.5, "laplace").pvalue > 1e-4


def test_shapes_scalars_and_broadcasting_follow_numpy() -> None:
    rng = SystemRandom()
    assert isinstance(rng.random(), float) and isinstance(rng.normal(), float)
    assert rng.standard_normal((3, 4)).shape == (3, 4)
    assert rng.normal(np.zeros(5), 1.0).shape == (5,)
    assert rng.laplace(0.0, np.ones((2, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="scale < 0"):
        rng.normal(0.0, -1.0)


def test_gaussian_noise_from_it_has_the_configured_scale() -> None:
    arrays = ArrayRecord({"w": np.zeros(50_000)})
    noised = add_gaussian_noise(arrays, 0.3, system_rng())["w"]
    assert noised.std() == pytest.approx(0.3, rel=0.02)
