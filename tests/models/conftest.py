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


def make_multiclass(n: int = 240, d: int = 5, k: int = 4, seed: int = 0) -> Dataset:
    """Labels 0..k-1 drawn from a softmax-linear model (every class present)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.random.default_rng(100).normal(size=(d, k)) * 2.0
    y = np.argmax(X @ W + rng.gumbel(size=(n, k)), axis=1).astype(np.int64)
    return Dataset(X=X, y=y)


def make_multilabel(n: int = 240, d: int = 5, labels: int = 3, seed: int = 0) -> Dataset:
    """``(n, labels)`` 0/1 targets, each from its own logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.random.default_rng(101).normal(size=(d, labels)) * 2.0
    y = (rng.random((n, labels)) < 1 / (1 + np.exp(-(X @ W)))).astype(np.float64)
    return Dataset(X=X, y=y)


def make_regression(n: int = 200, d: int = 5, seed: int = 0) -> Dataset:
    """``y = X w + 1 + noise`` (noise sd 0.3)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return Dataset(X=X, y=X @ np.linspace(-1.0, 1.0, d) + 1.0 + 0.3 * rng.normal(size=n))
