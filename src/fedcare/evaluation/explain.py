"""Placeholder of the explanations (replaced by issue 15's H2 branch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.records.arrays import ArrayRecord

__all__ = ["coefficient_table", "combine_importance", "site_importance", "site_information"]


def site_information(
    model: Mapping[str, Any], params: ArrayRecord, X: np.ndarray, y: np.ndarray, *, time: Any = None
) -> dict[str, Any] | None:
    return None


def coefficient_table(
    information_sum: np.ndarray,
    params: ArrayRecord,
    feature_names: Sequence[str],
    model: Mapping[str, Any],
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    return {}


def site_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    task: str,
    *,
    time: Any = None,
    feature_names: Sequence[str],
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    return {}


def combine_importance(per_site: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {}
