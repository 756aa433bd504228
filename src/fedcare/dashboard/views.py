"""The JSON shapes of the API (and what the web pages render): plain dicts from store rows."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fedcare.coordinator.rows import StudyInfo

__all__ = ["iso", "last_round_sites", "study_brief"]


def iso(when: datetime | None) -> str | None:
    """``when`` as an ISO 8601 UTC string (None stays None)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    elif when.tzinfo is not timezone.utc:
        when = when.astimezone(timezone.utc)
    return when.isoformat()


def study_brief(study: StudyInfo) -> dict[str, Any]:
    """A study in lists: id, name, status and why, progress, owner, times."""
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "reason": study.reason,
        "rounds_done": study.last_completed_round,
        "rounds_total": study.config.get("rounds"),
        "owner": study.owner,
        "created_at": iso(study.created_at),
        "updated_at": iso(study.updated_at),
    }


def last_round_sites(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per site of a round: ``aggregated``, ``failed`` (with its reason) or ``not used``."""
    failed: dict[str, Any] = summary["failed_sites"]
    sites = set(summary["sampled_sites"]) | set(summary["aggregated_sites"]) | set(failed)
    out: dict[str, dict[str, Any]] = {}
    for site in sorted(sites):
        if site in failed:
            out[site] = {"status": "failed", "reason": str(failed[site])}
        elif site in summary["aggregated_sites"]:
            out[site] = {"status": "aggregated", "reason": None}
        else:
            out[site] = {"status": "not used", "reason": "rejected by the aggregation"}
    return out
