"""Federated feature moments: per-site sums, combined at the coordinator.

A site sends, per feature, the count of non-missing values, their sum and sum of squares:
aggregates over its rows, never a row. The coordinator adds them up and derives the pooled
mean and standard deviation exactly (used for global standardization before training).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord

__all__ = ["Moments", "combine_moments", "feature_moments"]

#: A site refuses to report moments over fewer rows than this (small-cell protection).
DEFAULT_MIN_COUNT = 5


def feature_moments(X: np.ndarray, *, min_count: int = DEFAULT_MIN_COUNT) -> ArrayRecord:
    """Per-feature ``count``, ``sum`` and ``sumsq`` of a 2-D array, ignoring NaN.

    A feature with fewer than ``min_count`` non-missing values is suppressed: its count, sum
    and sum of squares are reported as 0 and ``suppressed`` is 1 for it, so statistics over so
    few patients never leave the site.

    Raises
    ------
    ValidationError
        If ``X`` is not 2-D.
    """
    if X.ndim != 2:
        raise ValidationError(f"feature moments need 2-D features, got shape {X.shape}")
    present = ~np.isnan(X)
    count = present.sum(axis=0).astype(np.float64)
    suppressed = count < min_count
    keep = present & ~suppressed
    filled = np.where(keep, X, 0.0)
    return ArrayRecord(
        {
            "count": np.where(suppressed, 0.0, count),
            "sum": filled.sum(axis=0),
            "sumsq": np.square(filled).sum(axis=0),
            "suppressed": suppressed.astype(np.float64),
        },
        copy=False,
    )


@dataclass(frozen=True)
class Moments:
    """Pooled per-feature statistics."""

    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def as_record(self) -> ArrayRecord:
        return ArrayRecord({"mean": self.mean, "std": self.std})


def combine_moments(parts: Iterable[ArrayRecord]) -> Moments:
    """Add up sites' moment records into the pooled mean and (population) SD."""
    total: ArrayRecord | None = None
    for part in parts:
        total = part if total is None else total + part
    if total is None:
        raise ValidationError("no site reported feature moments")
    count = total["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total["sum"] / count, np.nan)
        var = np.where(count > 0, np.maximum(total["sumsq"] / count - np.square(mean), 0.0), np.nan)
    return Moments(count=count, mean=mean, std=np.sqrt(var))
