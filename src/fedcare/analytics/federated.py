"""Federated statistics rounds driven through the grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedcare.analytics.moments import Moments, combine_moments
from fedcare.analytics.moments_check import moments_problem, outlying_sites
from fedcare.errors import RoundFailedError
from fedcare.grid import Grid
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply
from fedcare.strategy.base import Instruction
from fedcare.strategy.loop import RoundConfig, exchange

__all__ = ["StatisticsRound", "federated_feature_moments"]


@dataclass(frozen=True)
class StatisticsRound:
    """The pooled moments and which sites made them (and which were rejected, and why)."""

    moments: Moments
    sites: tuple[str, ...]
    rejected: dict[str, str] = field(default_factory=dict)


def _width(replies: Sequence[Reply], width: int | None) -> int:
    """The expected feature width: given, or the one most sites report."""
    if width is not None:
        return width
    widths = [int(r.arrays["count"].size) for r in replies if "count" in r.arrays]
    return max(sorted(set(widths)), key=widths.count) if widths else 0


def _consistent(
    replies: Sequence[Reply], width: int, declared: dict[str, int], rejected: dict[str, str]
) -> dict[str, ArrayRecord]:
    parts: dict[str, ArrayRecord] = {}
    for reply in replies:
        rows = declared.get(reply.site_id, reply.num_samples)
        reason = moments_problem(reply.site_id, reply.arrays, width=width, max_rows=rows)
        if reason is None and reply.num_samples != rows:
            reason = (
                f"statistics from site {reply.site_id!r} are over {reply.num_samples} rows; "
                f"it declared {rows} training rows"
            )
        if reason is None:
            parts[reply.site_id] = reply.arrays
        else:
            rejected[reply.site_id] = f"rejected: {reason}"
    return parts


def federated_feature_moments(
    grid: Grid,
    cfg: RoundConfig,
    sites: Sequence[str] | None = None,
    *,
    min_sites: int | None = None,
    width: int | None = None,
) -> StatisticsRound:
    """Pooled per-feature mean and SD from the sites' sums (round 0, kind ``stats``).

    Every site's reply is checked (:mod:`fedcare.analytics.moments_check`: consistency
    against the rows it declared, then robust outliers); a site that refuses, fails or sends
    implausible sums is left out and named in ``rejected``, and the moments come from the
    rest. ``width`` is the number of features (default: the one most sites report).

    Raises
    ------
    RoundFailedError
        If fewer than ``min_sites`` (default: all of ``sites``) sites gave usable sums.
    """
    sites = list(grid.site_ids() if sites is None else sites)
    needed = len(sites) if min_sites is None else min_sites
    failures: dict[str, str] = {}
    ins = [Instruction(s) for s in sites]
    replies = sorted(
        exchange(grid, cfg, 0, "stats", ArrayRecord(), ins, failures), key=lambda r: r.site_id
    )
    rejected: dict[str, str] = dict(failures)
    parts = _consistent(replies, _width(replies, width), grid.declared_rows("train"), rejected)
    for site, reason in outlying_sites(parts).items():
        rejected[site] = f"rejected: {reason}"
        del parts[site]
    if len(parts) < max(needed, 1):
        raise RoundFailedError(
            f"statistics round: {len(parts)} of {len(sites)} sites gave usable sums, "
            f"{needed} needed; rejected or failed: {rejected}",
            round=0,
            replied=len(parts),
            required=needed,
        )
    return StatisticsRound(combine_moments(parts.values()), tuple(sorted(parts)), rejected)
