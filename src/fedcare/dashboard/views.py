"""The JSON shapes of the HTTP API (``/api/v1``), built from the coordinator's store.

The API answers with them, the web pages render them, and the CLI prints them with
``--json`` on the coordinator's host, so a script reads the same fields whether it asked the
API or ran ``fedcare`` next to the database. Light on purpose (no FastAPI): the status
commands import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "analytics_job_brief",
    "analytics_job_view",
    "iso",
    "last_round_sites",
    "model_brief",
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


def study_detail(
    store: Any,
    study: Any,
    *,
    rounds: Sequence[tuple[Any, dict[str, Any]]] | None = None,
    site_errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``GET /studies/{id}`` (and ``fedcare study status ID --json``): the brief, the rounds'
    summaries, each site's part in the last round, the refusals (at most 20 sites') and the
    epsilon spent per site.

    Parameters
    ----------
    rounds:
        The study's recorded rounds as ``(RoundInfo, round_summary)`` pairs, if already read
        (the API keeps them between calls); else read from ``store``.
    site_errors:
        ``{site: line}`` of each site's latest error reply
        (:func:`~fedcare.coordinator.status_view.latest_site_errors`), if already read.
    """
    from fedcare.coordinator.audit_trail import round_summary
    from fedcare.coordinator.status_view import latest_site_errors, schema_refusals

    if rounds is None:
        rounds = [(r, round_summary(r.record)) for r in store.list_rounds(study.id)]
    if site_errors is None:
        site_errors = latest_site_errors(store, study.id)
    schema = schema_refusals(store, study.id, rounds=[info for info, _ in rounds[:1]])
    return {
        **study_brief(study),
        "rounds": [summary for _, summary in rounds],
        "last_round_sites": last_round_sites(rounds[-1][1]) if rounds else {},
        "refusals": schema + [site_errors[s] for s in sorted(site_errors)][:20],
        "epsilon_spent": store.site_epsilon(study.id),
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


def model_brief(model: Any, studies: Mapping[str, Any]) -> dict[str, Any]:
    """A registered model (:class:`~fedcare.coordinator.rows.ModelInfo`) as ``GET /models``
    lists it and ``fedcare models list`` shows it; ``studies`` by id name its study."""
    study = studies.get(model.study_id)
    return {
        "version": model.version,
        "study_id": model.study_id,
        "study_name": study.name if study else None,
        "round": model.round,
        "model_hash": model.model_hash,
        "parent": model.parent,
        "sites": len(model.card.get("sites") or {}),
        "created_at": iso(model.created_at),
    }


def analytics_job_brief(study: Any) -> dict[str, Any]:
    """An analytics job (a :class:`~fedcare.coordinator.rows.StudyInfo`) as ``GET /analytics``
    lists it: the study's brief with its dataset, queries and ``min_sites``."""
    spec = study.config.get("analytics") or {}
    dataset = (study.config.get("dataset") or {}).get("name") or spec.get("dataset")
    return {
        **study_brief(study),
        "dataset": dataset,
        "queries": [
            {"name": q.get("name"), "type": q.get("type")} for q in spec.get("queries") or []
        ],
        "min_sites": study.config.get("min_sites"),
    }


def analytics_job_view(study: Any, result: dict[str, Any] | None) -> dict[str, Any]:
    """An analytics job as ``GET /analytics/{id}`` shows it: its brief, its stored ``spec`` and
    its ``result`` (None until the sites have answered)."""
    return {**analytics_job_brief(study), "spec": study.config.get("analytics"), "result": result}
