"""Federated statistics rounds driven through the grid."""

from __future__ import annotations

from collections.abc import Sequence

from fedcare.analytics.moments import Moments, combine_moments
from fedcare.errors import RoundFailedError
from fedcare.records.arrays import ArrayRecord
from fedcare.strategy.base import Instruction
from fedcare.strategy.loop import RoundConfig, exchange
from fedcare.transport.base import Grid

__all__ = ["federated_feature_moments"]


def federated_feature_moments(
    grid: Grid, cfg: RoundConfig, sites: Sequence[str] | None = None
) -> Moments:
    """Pooled per-feature mean and SD from every site's sums (round 0, kind ``stats``).

    Raises
    ------
    RoundFailedError
        If any site does not report: standardizing with statistics that miss a site would
        silently differ from the pooled ones.
    """
    sites = list(grid.site_ids() if sites is None else sites)
    failures: dict[str, str] = {}
    ins = [Instruction(s) for s in sites]
    replies = exchange(grid, cfg, 0, "stats", ArrayRecord(), ins, failures)
    parts = [r.arrays for r in sorted(replies, key=lambda r: r.site_id)]  # order-free sums
    if failures or len(parts) != len(sites):
        raise RoundFailedError(
            f"statistics round: {len(parts)} of {len(sites)} sites reported; failures: {failures}",
            round=0,
            replied=len(parts),
            required=len(sites),
        )
    return combine_moments(parts)
