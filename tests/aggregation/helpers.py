"""Contributions from plain numpy rows, for hand-checkable aggregation tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcare.aggregation import Contribution
from fedcare.records.arrays import ArrayRecord

TEMPLATE = ArrayRecord({"w": np.zeros((2, 2)), "b": np.zeros(1)})


def record(row: Sequence[float]) -> ArrayRecord:
    """A record shaped like TEMPLATE from a flat row of 5 values."""
    v = np.asarray(row, dtype=np.float64)
    return ArrayRecord({"w": v[:4].reshape(2, 2), "b": v[4:5]})


def contributions(matrix: np.ndarray, weights: Sequence[float] | None = None) -> list[Contribution]:
    """One contribution per row of ``matrix`` (5 columns), from sites s0, s1, ..."""
    weights = weights if weights is not None else [1.0] * len(matrix)
    return [
        Contribution(f"s{i}", record(row), float(w))
        for i, (row, w) in enumerate(zip(matrix, weights, strict=True))
    ]


def flat(result: ArrayRecord) -> np.ndarray:
    return np.concatenate([result["w"].ravel(), result["b"].ravel()])


def honest_and_outlier(seed: int, n_honest: int, outlier: float) -> np.ndarray:
    """``n_honest`` rows near 1.0 and a last row at ``outlier`` (site s{n_honest})."""
    rng = np.random.default_rng(seed)
    honest = 1.0 + 0.1 * rng.normal(size=(n_honest, 5))
    return np.vstack([honest, np.full((1, 5), outlier)])
