"""Per-site timing of a round: when each sampled site's reply came, and what became of it.

The round loop notes each reply's arrival as it streams past (:func:`timed`) and records
:func:`site_timing` in the round's ``fit["site_timing"]``; reports and the coordinator's round
rows show it, so a study lead sees which sites set a round's pace and which were left out of a
deadline-bound round (:class:`~fedcare.grid.Quorum`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from fedcare.records.messages import Reply

__all__ = ["round_s", "site_timing", "timed"]


def timed(replies: Iterable[Reply], start: float, into: dict[str, float]) -> Iterator[Reply]:
    """Pass ``replies`` on, noting each one's arrival in seconds since ``start``."""
    for reply in replies:
        into[reply.site_id] = round_s(time.perf_counter() - start)
        yield reply
        del reply


def round_s(seconds: float) -> float:
    """Seconds as recorded in a round's timing (milliseconds kept)."""
    return round(seconds, 3)


def site_timing(
    sampled: Sequence[str],
    arrivals: Mapping[str, float],
    taken: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Each sampled site's timing in a round: ``reply_s`` (seconds from the round's start to
    its reply; ``None`` without one) and ``outcome``: ``taken`` (aggregated), ``failed`` (it
    replied with an error, or its reply was rejected) or ``late`` (no reply before the round
    closed: at its deadline, or after its quorum and grace period)."""
    out: dict[str, dict[str, Any]] = {}
    for site in sorted(sampled):
        reply_s = arrivals.get(site)
        if site in taken:
            outcome = "taken"
        elif reply_s is None:
            outcome = "late"
        else:
            outcome = "failed"
        out[site] = {"reply_s": reply_s, "outcome": outcome}
    return out
