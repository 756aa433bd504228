"""Placeholder of subgroup summaries (replaced by issue 15's H2 branch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["combine_subgroups", "group_labels", "subgroup_summary"]


def group_labels(
    raw_X: np.ndarray, feature_names: Sequence[str], specs: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    return {}


def subgroup_summary(
    task: str,
    y: Any,
    scores: Any,
    groups: Mapping[str, np.ndarray],
    *,
    threshold: float,
    bins: int,
    min_cell: int,
) -> dict[str, Any]:
    return {"min_cell": min_cell, "threshold": threshold, "groups": {}}


def combine_subgroups(
    per_site: Mapping[str, Mapping[str, Any]], *, min_cell: int
) -> dict[str, Any]:
    return {}
