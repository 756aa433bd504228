"""Text an operator can read and copy: reasons as sentences, hex serials, study-id prefixes.

Ids and plan hashes are printed whole (never cut by a table); reasons that carry a Python
dict of ``site -> reason`` (``failures: {'a': 'timeout'}``) read as ``site: reason`` lines.
"""

from __future__ import annotations

import ast
import re
from datetime import datetime, timezone
from typing import Any

__all__ = ["coordinator_line", "hex_serial", "readable_reason", "resolve_study_id"]

_DICT = re.compile(r"\{[^{}]*\}")


def hex_serial(serial: int) -> str:
    """A certificate serial as the agent and coordinator log it (lower-case hex)."""
    return f"{serial:x}"


def _lines(mapping: dict[Any, Any], indent: str) -> str:
    if not mapping:
        return "none"
    return "".join(f"\n{indent}{key}: {value}" for key, value in mapping.items())


def readable_reason(reason: str | None, indent: str = "  ") -> str:
    """``reason`` with each dict literal in it rendered as ``key: value`` lines (an empty
    dict as ``none``); text that holds no dict is returned unchanged."""
    if not reason:
        return ""

    def render(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            return match.group(0)
        return _lines(value, indent) if isinstance(value, dict) else match.group(0)

    return _DICT.sub(render, reason)


def resolve_study_id(store: Any, given: str) -> str:
    """The study id ``given`` names (a whole id or a unique prefix): see
    :func:`fedcare.coordinator.status_view.resolve_study_id`, shared with the HTTP API
    (imported here when called: ``fedcare --help`` does not load the coordinator)."""
    from fedcare.coordinator.status_view import resolve_study_id as resolve

    return resolve(store, given)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"


def coordinator_line(info: Any, now: datetime) -> str:
    """The first line of ``fedcare sites``: whether the home's coordinator runs (its liveness
    row, :mod:`fedcare.coordinator.store_presence`), so that site states read while it is
    stopped are not taken for live ones."""
    from fedcare.coordinator.store_presence import FRESH_BEATS

    if info is None:
        return "coordinator: NOT running (it never started on this home); no site can connect"
    seen = info.seen_at if info.seen_at.tzinfo else info.seen_at.replace(tzinfo=timezone.utc)
    age = (now - seen).total_seconds()
    if info.status == "running" and age <= FRESH_BEATS * info.beat_s:
        return f"coordinator: running at {info.listen} (pid {info.pid} on {info.host})"
    how = "stopped" if info.status == "stopped" else "last seen, did not stop cleanly,"
    return (
        f"coordinator: NOT running ({how} {_ago(age)} ago); "
        "the states below are as the sites were last seen"
    )
