"""Text an operator can read and copy: reasons as sentences, hex serials, study-id prefixes.

Ids and plan hashes are printed whole (never cut by a table); reasons that carry a Python
dict of ``site -> reason`` (``failures: {'a': 'timeout'}``) read as ``site: reason`` lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "coordinator_line",
    "hex_serial",
    "print_sites",
    "print_status",
    "readable_reason",
    "resolve_study_id",
    "rounds_done",
]

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


# --- study status and sites, from the API's shapes (fedcare.dashboard.views) ----------------
def rounds_done(study: dict[str, Any]) -> str:
    """``done/total`` of a StudyBrief (``-`` before the first round, ``?`` if unknown)."""
    total = study.get("rounds_total")
    done = study.get("rounds_done")
    return f"{'-' if done is None else done}/{'?' if total is None else total}"


def _print_reason(out: Any, study: dict[str, Any]) -> None:
    """Why a study ended, or (while it runs) what it waits for: one line each, e.g.
    ``waiting: awaiting approval at hungary, va (...)`` (:mod:`fedcare.coordinator.waiting`)."""
    reason = study.get("reason")
    if not reason:
        return
    if study["status"] != "running":
        out.print(f"  reason: {readable_reason(reason, '    ')}", markup=False)
        return
    for line in reason.splitlines():
        out.print(f"  {readable_reason(line, '    ')}", markup=False)


def print_status(
    studies: list[dict[str, Any]],
    refusals: Sequence[str] = (),
    epsilon: dict[str, float] | None = None,
    *,
    one: bool = False,
) -> None:
    """What ``fedcare study status`` prints, from StudyBriefs (``one``: a single study as
    ``field: value`` lines, never a table, so nothing is cut at 80 columns), then the
    refusals and the epsilon spent per site (the privacy ledger)."""
    from rich.console import Console

    out = Console(emoji=False, soft_wrap=True, highlight=False)
    if one:
        (study,) = studies
        out.print(f"study {study['id']}", markup=False)
        out.print(f"  name: {study['name']}\n  status: {study['status']}\n"
                  f"  rounds done: {rounds_done(study)}", markup=False)  # fmt: skip
        _print_reason(out, study)
    else:
        for s in studies:
            out.print(f"{s['id']}  {s['name']}  {s['status']}  {rounds_done(s)}", markup=False)
            _print_reason(out, s)
    for line in refusals:
        out.print(readable_reason(line), markup=False)
    for site, eps in (epsilon or {}).items():
        out.print(f"site {site}: epsilon spent on this dataset {eps:.3g}")


def print_sites(sites: list[dict[str, Any]]) -> None:
    """The table of ``fedcare sites`` from ``GET /sites`` entries (last seen in UTC)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("site", "state", "last seen (UTC)", "version", "datasets")
    for column in table.columns:  # wrap long cells, never cut them with …
        column.overflow = "fold"
    for s in sites:
        seen = "never"
        if s.get("last_seen"):
            when = datetime.fromisoformat(s["last_seen"])
            when = when.astimezone(timezone.utc) if when.tzinfo else when
            seen = when.strftime("%Y-%m-%d %H:%M:%S")
        datasets = ", ".join(s.get("datasets") or [])
        table.add_row(s["id"], s["state"], seen, s.get("version") or "", datasets)
    Console(emoji=False).print(table)
