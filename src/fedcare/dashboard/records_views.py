"""The JSON of the records routes (models, analytics, privacy ledger, sites), built from the
coordinator's store with the caller's visibility: a study lead sees what belongs to the
studies they submitted (anything else is 404, as if it did not exist); operators and auditors
see everything. The web pages render the same dicts."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException

from fedcare.coordinator.analytics_jobs import analytics_job_result
from fedcare.coordinator.analytics_jobs import is_analytics_study as _is_job
from fedcare.coordinator.registry_view import descendants
from fedcare.coordinator.rows import ModelInfo, SiteInfo, StudyInfo, UserInfo
from fedcare.coordinator.site_view import full_site_state, revocation_list
from fedcare.coordinator.status_view import error_line, schema_refusal_line
from fedcare.dashboard.context import ApiContext
from fedcare.dashboard.views import (
    analytics_job_brief,
    analytics_job_view,
    iso,
    model_brief,
    site_entry,
)
from fedcare.errors import FedcareError, NotFoundError

__all__ = [
    "analytics_job",
    "analytics_jobs",
    "hidden_ancestors",
    "ledger",
    "model_briefs",
    "model_lineage",
    "site_detail",
    "site_entries",
    "visible_model",
    "visible_studies",
]


def visible_studies(ctx: ApiContext, user: UserInfo) -> dict[str, StudyInfo]:
    """The studies ``user`` may see, by id (a study lead: their own)."""
    studies = ctx.store.list_studies()
    if user.role == "study-lead":
        studies = [s for s in studies if s.owner == user.name]
    return {s.id: s for s in studies}


# --- models --------------------------------------------------------------------------------------
def model_briefs(ctx: ApiContext, user: UserInfo) -> list[dict[str, Any]]:
    """The registered models ``user`` may see, oldest first (``fedcare models list``)."""
    studies = visible_studies(ctx, user)
    return [model_brief(m, studies) for m in ctx.store.list_models() if m.study_id in studies]


def visible_model(ctx: ApiContext, user: UserInfo, version: str) -> ModelInfo:
    """The model ``version`` if ``user`` may see it; 404 otherwise (same words either way)."""
    try:
        model = ctx.store.get_model(version)
    except NotFoundError as err:
        raise HTTPException(404, str(err)) from None
    if model.study_id not in visible_studies(ctx, user):
        raise HTTPException(404, f"no model version {version!r} in the registry")
    return model


def model_lineage(ctx: ApiContext, user: UserInfo, version: str) -> dict[str, Any]:
    """``version`` itself (``model``: as ``GET /models`` lists it), its ancestors (parent
    first) and descendants (oldest first); a model of a
    study ``user`` may not see shows as ``{"version", "visible": false}`` (ancestors) or not
    at all (descendants)."""
    visible_model(ctx, user, version)
    studies = visible_studies(ctx, user)

    def entry(m: ModelInfo) -> dict[str, Any]:
        if m.study_id not in studies:
            return {"version": m.version, "visible": False}
        return {**model_brief(m, studies), "visible": True}

    try:
        chain = ctx.store.lineage(version)
    except FedcareError as err:
        raise HTTPException(409, str(err)) from None
    below = [m for m in descendants(ctx.store.list_models(), version) if m.study_id in studies]
    return {
        "version": version,
        "model": entry(chain[0]),
        "ancestors": [entry(m) for m in chain[1:]],
        "descendants": [entry(m) for m in below],
    }


def hidden_ancestors(ctx: ApiContext, user: UserInfo, version: str) -> set[str]:
    """The ancestors of ``version`` from studies ``user`` may not see."""
    studies = visible_studies(ctx, user)
    return {m.version for m in ctx.store.lineage(version) if m.study_id not in studies}


# --- analytics -----------------------------------------------------------------------------------
def analytics_jobs(ctx: ApiContext, user: UserInfo) -> list[dict[str, Any]]:
    """The federated analytics jobs ``user`` may see, newest first."""
    studies = visible_studies(ctx, user).values()
    jobs = [s for s in studies if _is_job(s.config)]
    return [analytics_job_brief(s) for s in sorted(jobs, key=lambda s: s.created_at, reverse=True)]


def analytics_job(ctx: ApiContext, user: UserInfo, job_id: str) -> dict[str, Any]:
    """One job: its brief, its spec and its result (null until it has one)."""
    study = ctx.visible_study(user, job_id)
    if not _is_job(study.config):
        raise HTTPException(404, f"study {study.id!r} is not an analytics job")
    result = analytics_job_result(ctx.store, study.id, require=False)
    return analytics_job_view(study, result)


# --- privacy ledger ------------------------------------------------------------------------------
def ledger(ctx: ApiContext, user: UserInfo) -> dict[str, Any]:
    """The coordinator's mirror of the sites' privacy ledgers, for the studies ``user`` may
    see: ``sites`` (per site and dataset: the epsilon spent so far, over every study) and
    ``studies`` (per study, site and dataset: the rounds recorded and the site's epsilon on
    the dataset after the study's last one)."""
    studies = visible_studies(ctx, user)
    rows = [r for r in ctx.store.privacy_ledger() if r.study_id in studies]
    all_rows = ctx.store.privacy_ledger() if user.role == "study-lead" else rows
    pairs = {(r.site_id, r.dataset) for r in rows}
    sites: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        entry = sites.setdefault(
            (r.site_id, r.dataset),
            {"site": r.site_id, "dataset": r.dataset, "studies": set(), "rounds": 0},
        )
        entry["rounds"] += 1
        entry["studies"].add(r.study_id)
    for r in all_rows:  # the last row of a (site, dataset), any study, holds its epsilon so far
        if (r.site_id, r.dataset) in pairs:
            entry = sites[(r.site_id, r.dataset)]
            entry["epsilon_spent"], entry["updated_at"] = r.epsilon_after, iso(r.recorded_at)
    per_study: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        entry = per_study.setdefault(
            (r.study_id, r.site_id, r.dataset),
            {
                "study_id": r.study_id,
                "study_name": studies[r.study_id].name,
                "site": r.site_id,
                "dataset": r.dataset,
                "rounds": [],
            },
        )
        entry["rounds"].append(r.round)
        entry["epsilon_after"], entry["updated_at"] = r.epsilon_after, iso(r.recorded_at)
    return {
        "sites": [
            {**e, "studies": len(e["studies"])}
            for _, e in sorted(sites.items(), key=lambda x: x[0])
        ],
        "studies": list(per_study.values()),
    }


# --- sites ---------------------------------------------------------------------------------------
def _revocations(ctx: ApiContext) -> list[Any] | None:
    """The coordinator kit's revocation list, when its home names a readable kit."""
    if ctx.home is None:
        return None
    try:
        return revocation_list(ctx.home)
    except FedcareError:
        return None


def _site_entry(site: SiteInfo, ctx: ApiContext, now: datetime, revoked: Any) -> dict[str, Any]:
    return site_entry(site, full_site_state(site, now, ctx.liveness_s, revoked))


def site_entries(ctx: ApiContext) -> list[dict[str, Any]]:
    """Every registered site as ``fedcare sites`` shows it."""
    now, revoked = datetime.now(timezone.utc), _revocations(ctx)
    return [_site_entry(s, ctx, now, revoked) for s in ctx.store.list_sites()]


def _dataset(name: str, described: Any) -> dict[str, Any]:
    """A dataset a site offers, with a summary of its feature schema in plain words."""
    described = described if isinstance(described, dict) else {}
    schema = described.get("schema") if isinstance(described.get("schema"), dict) else None
    shape = (schema or {}).get("input_shape") or described.get("input_shape")
    columns = [c.get("name") for c in (schema or {}).get("columns") or [] if isinstance(c, dict)]
    if columns:
        summary = f"{len(columns)} columns: {', '.join(str(c) for c in columns)}"
    elif shape:
        summary = f"features of shape {' x '.join(str(n) for n in shape)}"
    else:
        summary = "no description of its data"
    return {
        "name": name,
        "task": described.get("task"),
        "train_rows": described.get("num_train"),
        "test_rows": described.get("num_test"),
        "schema": schema,
        "summary": summary,
    }


def site_detail(ctx: ApiContext, user: UserInfo, site_id: str) -> dict[str, Any]:
    """One site: state, times, version, datasets (with their schema) and its latest refusals
    in the studies ``user`` may see (newest study first, at most 20)."""
    try:
        site = ctx.store.get_site(site_id)
    except NotFoundError:
        raise HTTPException(404, f"no site with id {site_id!r}") from None
    now = datetime.now(timezone.utc)
    return {
        **_site_entry(site, ctx, now, _revocations(ctx)),
        "status": site.status,
        "first_seen": iso(site.first_seen),
        "datasets": [_dataset(n, d) for n, d in sorted((site.datasets or {}).items())],
        "refusals": _site_refusals(ctx, user, site.id),
    }


def _site_refusals(ctx: ApiContext, user: UserInfo, site_id: str) -> list[dict[str, Any]]:
    """The site's refusals in the studies ``user`` may see, newest study first, at most 20:
    per study, its refusal at the start (its feature schema differs), then its latest error
    reply. Two queries, whatever the number of studies (not two per study)."""
    visible = visible_studies(ctx, user)
    errors = {e.study_id: e for e in ctx.store.site_errors(site_id) if e.study_id in visible}
    started = ctx.store.start_refusals(visible)
    refusals: list[dict[str, Any]] = []
    for study in reversed(sorted(visible.values(), key=lambda s: s.created_at)):
        lines = []
        if site_id in started.get(study.id, {}):
            lines.append(schema_refusal_line(site_id, started[study.id][site_id]))
        if study.id in errors:
            lines.append(error_line(site_id, errors[study.id]))
        refusals += [{"study_id": study.id, "study_name": study.name, "line": s} for s in lines]
        if len(refusals) >= 20:
            break
    return refusals[:20]
