"""Dirichlet label-skew partitions and class-proportional splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcare.data.partition import class_fractions, dirichlet_partition, proportional_partition
from fedcare.errors import ConfigError


def labels_74_percent_positive(n: int = 2000) -> np.ndarray:
    return (np.arange(n) % 100 < 74).astype(np.int64)


def assert_covers_once(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))
    for p in parts:
        assert np.all(np.diff(p) > 0), "indices are sorted and unique"


def test_covers_every_row_exactly_once() -> None:
    y = labels_74_percent_positive()
    parts = dirichlet_partition(y, 5, 0.5, np.random.default_rng(0), min_size=20)
    assert len(parts) == 5
    assert_covers_once(parts, len(y))
    assert min(len(p) for p in parts) >= 20


def test_same_seed_same_partition_other_seed_other_partition() -> None:
    y = labels_74_percent_positive()
    a = dirichlet_partition(y, 5, 0.5, np.random.default_rng(7))
    b = dirichlet_partition(y, 5, 0.5, np.random.default_rng(7))
    c = dirichlet_partition(y, 5, 0.5, np.random.default_rng(8))
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert any(len(pa) != len(pc) or np.any(pa != pc) for pa, pc in zip(a, c, strict=True))


def test_small_alpha_skews_labels_and_large_alpha_does_not() -> None:
    y = labels_74_percent_positive(5000)

    def spread(alpha: float) -> float:
        parts = dirichlet_partition(y, 5, alpha, np.random.default_rng(1), min_size=50)
        positive_rate = [y[p].mean() for p in parts]
        return float(max(positive_rate) - min(positive_rate))

    assert spread(0.5) > 0.2
    assert spread(1000.0) < 0.05


def test_inputs_are_not_mutated() -> None:
    y = labels_74_percent_positive()
    before = y.copy()
    dirichlet_partition(y, 3, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sites": 0}, "num_sites"),
        ({"num_sites": 2.5}, "num_sites"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"min_size": 1000}, "min_size=1000"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"num_sites": 3, "alpha": 0.5, "min_size": 1} | kwargs
    with pytest.raises(ConfigError, match=match):
        dirichlet_partition(
            np.zeros(100, dtype=int),
            rng=np.random.default_rng(0),
            **args,  # type: ignore[arg-type]
        )


def test_impossible_min_size_gives_up_with_advice() -> None:
    y = labels_74_percent_positive(200)
    with pytest.raises(ConfigError, match="raise alpha or lower min_size"):
        dirichlet_partition(y, 10, 0.01, np.random.default_rng(0), min_size=19, max_tries=20)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=300),
    num_sites=st.integers(1, 8),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_every_row_once(
    labels: list[int], num_sites: int, alpha: float, seed: int
) -> None:
    y = np.asarray(labels)
    parts = dirichlet_partition(y, num_sites, alpha, np.random.default_rng(seed), min_size=0)
    assert len(parts) == num_sites
    assert_covers_once(parts, len(y))


def test_proportional_partition_follows_the_class_shares() -> None:
    train = labels_74_percent_positive(3000)
    parts = dirichlet_partition(train, 4, 0.5, np.random.default_rng(3), min_size=30)
    fractions = class_fractions(train, parts)
    assert fractions.shape == (2, 4)
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    val = labels_74_percent_positive(500)
    val_parts = proportional_partition(val, fractions, np.random.default_rng(3))
    assert_covers_once(val_parts, len(val))
    for c in (0, 1):
        n_c = int(np.sum(val == c))
        for k, part in enumerate(val_parts):
            # Largest-remainder rounding: within one row of the exact share.
            assert abs(int(np.sum(val[part] == c)) - fractions[c, k] * n_c) < 1.0


def test_proportional_partition_is_deterministic() -> None:
    val = labels_74_percent_positive(300)
    shares = np.array([[0.5, 0.5], [0.1, 0.9]])
    a = proportional_partition(val, shares, np.random.default_rng(5))
    b = proportional_partition(val, shares, np.random.default_rng(5))
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize(
    ("shares", "match"),
    [
        (np.array([[1.0, 0.0]]), "shape"),
        (np.array([[0.5, 0.6], [0.5, 0.5]]), "sum to 1"),
        (np.array([[1.5, -0.5], [0.5, 0.5]]), ">= 0"),
    ],
)
def test_proportional_partition_rejects_bad_fractions(shares: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        proportional_partition(np.array([0, 1, 1]), shares, np.random.default_rng(0))


def test_proportional_partition_rejects_unknown_labels() -> None:
    with pytest.raises(ConfigError, match=r"\[2\]"):
        proportional_partition(
            np.array([0, 1, 2]), np.array([[1.0], [1.0]]), np.random.default_rng(0), classes=(0, 1)
        )
