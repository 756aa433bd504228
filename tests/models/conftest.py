"""Small synthetic datasets shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.data.base import Dataset


def make_binary(n: int = 120, d: int = 5, seed: int = 0) -> Dataset:
    """Standardized features and labels from a logistic model (both classes present)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = np.linspace(-1.0, 1.0, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w + 0.3)))).astype(np.int64)
    return Dataset(X=X, y=y)


def make_survival(n: int = 80, d: int = 4, seed: int = 0, ties: bool = True) -> Dataset:
    """Cox-model survival data; with ``ties`` times are rounded so many rows share a time."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    beta = np.linspace(0.8, -0.5, d)
    t_event = rng.exponential(1 / np.exp(X @ beta))
    t_censor = rng.exponential(2.0, size=n)
    time = np.minimum(t_event, t_censor)
    if ties:
        time = np.round(time, 1) + 0.1
    return Dataset(X=X, y=(t_event <= t_censor).astype(np.float64), time=time)


@pytest.fixture
def binary_data() -> Dataset:
    return make_binary()


@pytest.fixture
def survival_data() -> Dataset:
    return make_survival()
