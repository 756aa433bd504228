"""Federated Kaplan-Meier on TCGA-BRCA against lifelines on the pooled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.data.base import FederatedDataset
from fedcare.errors import RoundFailedError
from tests.analytics.helpers import pooled_frame, replies, run


def _lifelines(time: np.ndarray, event: np.ndarray, at: np.ndarray) -> np.ndarray:
    kmf = KaplanMeierFitter().fit(time, event)
    return np.asarray(kmf.survival_function_at_times(at), dtype=float)


@pytest.fixture(scope="module")
def pooled(tcga: FederatedDataset) -> pd.DataFrame:
    return pooled_frame(tcga)


def test_exact_mode_equals_lifelines_everywhere(
    tcga: FederatedDataset, pooled: pd.DataFrame
) -> None:
    # Privacy cost: every site sends its distinct times with event/censoring counts (min_cell 1).
    result, _ = run(tcga, {"queries": [{"type": "kaplan_meier", "mode": "exact"}]})
    got = result.queries[0]
    times = np.asarray(got["time"])
    assert len(times) == pooled["time"].nunique()
    expected = _lifelines(pooled["time"].to_numpy(), pooled["event"].to_numpy(), times)
    assert np.max(np.abs(np.asarray(got["survival"]) - expected)) <= 1e-9


def test_grid_of_all_event_times_equals_lifelines(
    tcga: FederatedDataset, pooled: pd.DataFrame
) -> None:
    grid = np.unique(pooled.loc[pooled["event"] == 1, "time"]).tolist()
    result, _ = run(tcga, {"queries": [{"type": "kaplan_meier", "grid": grid}]})
    expected = _lifelines(pooled["time"].to_numpy(), pooled["event"].to_numpy(), np.asarray(grid))
    assert np.max(np.abs(np.asarray(result.queries[0]["survival"]) - expected)) <= 1e-9


def test_coarse_grid_is_exact_km_of_the_rounded_data(
    tcga: FederatedDataset, pooled: pd.DataFrame
) -> None:
    grid = np.arange(1.0, 11.0) * 365.0
    result, _ = run(tcga, {"queries": [{"type": "kaplan_meier", "grid": grid.tolist()}]})
    t, e = pooled["time"].to_numpy(), pooled["event"].to_numpy().astype(bool)
    # events rounded up to the next grid point, censorings down to the previous one
    up = np.searchsorted(grid, t, side="left")
    down = np.searchsorted(grid, t, side="right") - 1
    rounded = np.where(
        e,
        np.where(up < len(grid), grid[np.minimum(up, len(grid) - 1)], grid[-1] + 1),
        np.where(down >= 0, grid[np.maximum(down, 0)], 0.0),
    )
    expected = _lifelines(rounded, e, grid)
    got = np.asarray(result.queries[0]["survival"])
    assert np.max(np.abs(got - expected)) <= 1e-9
    # and it is NOT the raw curve at these points (the test can tell the two apart)
    raw = _lifelines(t, e, grid)
    assert np.max(np.abs(got - raw)) > 1e-6


def test_grid_mode_suppresses_small_cells_on_the_wire(tcga: FederatedDataset) -> None:
    grid = (np.arange(1.0, 11.0) * 365.0).tolist()
    result, wire = run(
        tcga, {"queries": [{"type": "kaplan_meier", "grid": grid}]}, AnalyticsPolicy(min_cell=5)
    )
    hidden = 0
    for reply in replies(wire):
        for name in ("q0/count_events", "q0/count_at_risk"):
            values = reply.arrays[name]
            mask = reply.arrays[f"{name}:suppressed"].astype(bool)
            assert np.all((values == 0) | (values >= 5)), (reply.site_id, name, values)
            assert np.all(values[mask] == 0)
            hidden += int(mask.sum())
    got = result.queries[0]
    assert hidden > 0 and got["suppressed"]
    assert not all(got["complete"])
    for site, points in got["suppressed"].items():
        assert all(got["per_site"][site][k] is None for k in points)


def test_exact_mode_refused_by_a_default_site(tcga: FederatedDataset) -> None:
    with pytest.raises(RoundFailedError, match="min_cell is 5"):
        run(
            tcga,
            {"queries": [{"type": "kaplan_meier", "mode": "exact"}]},
            AnalyticsPolicy(min_cell=5),
        )
