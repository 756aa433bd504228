"""Shared fixtures' builders: built-in datasets over an in-memory grid, pooled frames."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.frame import site_frame
from fedcare.analytics.run import AnalyticsResult, run_analytics
from fedcare.analytics.spec import AnalyticsSpec
from fedcare.data.base import FederatedDataset
from fedcare.records.messages import Reply
from fedcare.simulation.analytics import analytics_grid
from fedcare.transport.inmemory import InMemoryGrid

#: No count is withheld: the federated values must equal the pooled ones.
OPEN = AnalyticsPolicy(min_cell=1, seeded_noise=True)


def pooled_frame(ds: FederatedDataset) -> pd.DataFrame:
    return pd.concat([site_frame(s, ds.feature_names) for s in ds.sites], ignore_index=True)


def run(
    ds: FederatedDataset, spec: Mapping[str, Any], policy: AnalyticsPolicy = OPEN
) -> tuple[AnalyticsResult, InMemoryGrid]:
    grid = analytics_grid(ds, policy, record=True)
    parsed = AnalyticsSpec.from_dict(spec)
    return run_analytics(grid, parsed, study_id="t", columns=ds.feature_names), grid


def replies(grid: InMemoryGrid) -> list[Reply]:
    return [m for m in grid.wire if isinstance(m, Reply)]


def close(a: object, b: object, tol: float = 1e-9) -> bool:
    """Equal within ``tol`` relative to max(1, |b|), NaN equal to NaN."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True))
