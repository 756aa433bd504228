"""Input checks and the rank AUROC shared by :mod:`~fedcare.evaluation.metrics` and
:mod:`~fedcare.evaluation.task_metrics` (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcare.errors import ValidationError


def _vector(name: str, values: Any, *, finite: bool = True) -> np.ndarray:
    """``values`` as a 1-D float array (no copy when possible), validated."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValidationError(f"{name} must be 1-D, got shape {arr.shape}")
    if finite:
        _check_finite(name, arr)
    return arr


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValidationError(f"{name} holds {bad} NaN or infinite value(s) out of {arr.size}")


def _labels(name: str, values: Any, n: int | None = None) -> np.ndarray:
    """``values`` as a 1-D boolean array, checked to hold only 0 and 1."""
    arr = _vector(name, values)
    if n is not None and arr.shape != (n,):
        raise ValidationError(f"{name} has shape {arr.shape}, expected ({n},)")
    return _zero_one(name, arr)


def _zero_one(name: str, arr: np.ndarray) -> np.ndarray:
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:5].tolist()
        raise ValidationError(f"{name} must hold only 0 and 1, found {bad}")
    return arr == 1.0


def _check_probabilities(name: str, p: np.ndarray) -> None:
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValidationError(
            f"{name} must be probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]"
        )


def _rank_auroc(pos: np.ndarray, s: np.ndarray) -> float:
    """AUROC of scores ``s`` for the boolean labels ``pos`` (``NaN`` with one class only)."""
    n_pos = int(np.count_nonzero(pos))
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value: its last rank minus half its tie span.
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(np.sum(avg_rank[inverse.reshape(-1)][pos]))
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
