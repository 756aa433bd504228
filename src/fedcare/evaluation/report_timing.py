"""The report's "Site timing" section: when each site's reply came in each round.

Rows are rounds, columns the sites sampled in any round; a cell is the seconds from the
round's start to the site's reply (``fit["site_timing"]``, :mod:`fedcare.strategy.timing`),
marked when the reply was not taken: ``late`` (no reply before the round closed: its
deadline, or its quorum and grace period) or ``failed``. Rounds recorded before site timing
existed are left out; no round with it, no section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["site_timing_table"]


def _cell(entry: Mapping[str, Any]) -> str:
    reply_s, outcome = entry.get("reply_s"), entry.get("outcome")
    seconds = f"{reply_s:.2f} s" if isinstance(reply_s, (int, float)) else ""
    if outcome == "taken":
        return seconds
    return f"{seconds} ({outcome})".strip() if seconds else str(outcome or "–")


def site_timing_table(history: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``{"sites": [...], "rows": [(round, [cell, ...]), ...], "late": n}`` or ``None``."""
    timed: list[tuple[Any, Mapping[str, Any]]] = []
    for i, h in enumerate(history):
        timing = (h.get("fit") or {}).get("site_timing")
        if isinstance(timing, Mapping) and timing:
            timed.append((h.get("round", i + 1), timing))
    if not timed:
        return None
    sites = sorted({s for _, t in timed for s in t})
    rows = [(r, [_cell(t[s]) if s in t else "" for s in sites]) for r, t in timed]
    late = sum(1 for _, t in timed for e in t.values() if e.get("outcome") == "late")
    return {"sites": sites, "rows": rows, "late": late}
