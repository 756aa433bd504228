"""The JSON shapes of the HTTP API (``/api/v1``), built from the coordinator's store.

The API answers with them, the web pages render them, and the CLI prints them with
``--json`` on the coordinator's host, so a script reads the same fields whether it asked the
API or ran ``fedcare`` next to the database. Light on purpose (no FastAPI): the status
commands import it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = [
    "iso",
    "last_round_sites",
    "round_entry",
    "site_entry",
    "study_brief",
    "study_detail",
]


def iso(when: datetime | None) -> str | None:
    """``when`` as an ISO 8601 UTC string (None stays None)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    elif when.tzinfo is not timezone.utc:
        when = when.astimezone(timezone.utc)
    return when.isoformat()


def study_brief(study: Any) -> dict[str, Any]:
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


def study_detail(store: Any, study: Any) -> dict[str, Any]:
    """``GET /studies/{id}``: the brief, the rounds' summaries, each site's part in the last
    round, the refusals and the epsilon spent per site."""
    from fedcare.coordinator.audit_trail import round_summary
    from fedcare.coordinator.status_view import schema_refusals, site_refusals

    rounds = [round_summary(r.record) for r in store.list_rounds(study.id)]
    return {
        **study_brief(study),
        "rounds": rounds,
        "last_round_sites": last_round_sites(rounds[-1]) if rounds else {},
        "refusals": schema_refusals(store, study.id) + site_refusals(store, study.id),
        "epsilon_spent": store.site_epsilon(study.id),
    }


#: What a stored round record does not keep about each site's reply.
_UNKNOWN_REPLY = {"reply_kind": None, "reply_bytes": None, "sent_at": None, "replied_at": None}


def round_entry(info: Any) -> dict[str, Any]:
    """A completed round (:class:`~fedcare.coordinator.rows.RoundInfo`) as a RoundEntry of
    ``GET /studies/{id}/rounds``, from what the stored round record holds: the weighted
    evaluation metrics (finite numbers only) and each site's part (``aggregated``, ``failed``
    with its reason, ``not used``). The per-attempt fields the record does not keep (start
    time, reply sizes) are null."""
    import math

    from fedcare.coordinator.audit_trail import round_summary

    weighted = ((info.record or {}).get("evaluate") or {}).get("weighted") or {}
    metrics = {
        str(k): float(v)
        for k, v in weighted.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    parts = last_round_sites(round_summary(info.record or {}))
    return {
        "round": info.round,
        "attempt": 1,
        "status": info.status,
        "started_at": None,
        "finished_at": iso(info.completed_at),
        "metrics": metrics,
        "sites": {site: {**part, **_UNKNOWN_REPLY} for site, part in parts.items()},
    }


def site_entry(site: Any, state: str) -> dict[str, Any]:
    """An entry of ``GET /sites`` for a :class:`~fedcare.coordinator.rows.SiteInfo` whose
    state (``connected``, ``stale (…)``, ``revoked``…) the caller worked out."""
    return {
        "id": site.id,
        "state": state,
        "last_seen": iso(site.last_seen),
        "version": site.version,
        "datasets": sorted(site.datasets or {}),
    }
