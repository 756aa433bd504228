"""The coordinator's HTTP API (FastAPI), versioned under ``/api/v1``.

:func:`create_app` builds it over a coordinator store and its audit trail; serve it with
:func:`fedcare.dashboard.serve.serve_api`. The schema is at ``/api/v1/openapi.json`` (like
every route but health, for signed-in users only).

Roles: an ``operator`` sees and does everything; an ``auditor`` reads everything and changes
nothing (403); a ``study-lead`` sees the studies they submitted (``owner``) and cancels them —
another's study, or one submitted on the coordinator's host, is answered 404 as if it did not
exist. Every change is written to the coordinator audit naming the person.
"""

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from fedcare.coordinator.audit_trail import CoordinatorAudit, round_summary
from fedcare.coordinator.rows import StudyInfo, UserInfo
from fedcare.coordinator.status_view import schema_refusals, site_refusals, site_state
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.auth import Authenticator, FailureLimiter, bearer
from fedcare.errors import ConflictError, NotFoundError

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).isoformat() if when else None


def _study_brief(study: StudyInfo) -> dict[str, Any]:
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "reason": study.reason,
        "rounds_done": study.last_completed_round,
        "rounds_total": study.config.get("rounds"),
        "owner": study.owner,
        "created_at": _iso(study.created_at),
        "updated_at": _iso(study.updated_at),
    }


def _last_round_sites(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
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


def create_app(
    store: CoordinatorStore,
    audit: CoordinatorAudit,
    *,
    failure_limit: int = 10,
    failure_window_s: float = 60.0,
    liveness_s: float = 30.0,
) -> FastAPI:
    """The API over ``store``, auditing changes to ``audit``.

    Parameters
    ----------
    failure_limit, failure_window_s:
        Failed authentications allowed per client address in the window before 429.
    liveness_s:
        Seconds of silence after which a site shows as stale (as ``fedcare sites``).
    """
    auth = Authenticator(store, FailureLimiter(failure_limit, failure_window_s))

    def current_user(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> UserInfo:
        return auth.user(request, credentials)

    User = Annotated[UserInfo, Depends(current_user)]

    def visible_study(user: UserInfo, study_id: str) -> StudyInfo:
        try:
            study = store.get_study(study_id)
        except NotFoundError:
            study = None
        if study is None or (user.role == "study-lead" and study.owner != user.name):
            raise HTTPException(404, f"no study with id {study_id!r}")
        return study

    app = FastAPI(title="fedcare coordinator API", version="1", openapi_url=None, docs_url=None)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness of the API (the only route answered without a token)."""
        return {"status": "ok"}

    @app.get(f"{API_PREFIX}/studies", tags=["studies"])
    def list_studies(user: User) -> list[dict[str, Any]]:
        """The studies the caller may see, oldest first."""
        studies = store.list_studies()
        if user.role == "study-lead":
            studies = [s for s in studies if s.owner == user.name]
        return [_study_brief(s) for s in studies]

    @app.get(f"{API_PREFIX}/studies/{{study_id}}", tags=["studies"])
    def get_study(study_id: str, user: User) -> dict[str, Any]:
        """A study: status, progress, rounds, the last round per site, refusals, epsilon."""
        study = visible_study(user, study_id)
        rounds = [round_summary(r.record) for r in store.list_rounds(study.id)]
        return {
            **_study_brief(study),
            "rounds": rounds,
            "last_round_sites": _last_round_sites(rounds[-1]) if rounds else {},
            "refusals": schema_refusals(store, study.id) + site_refusals(store, study.id),
            "epsilon_spent": store.site_epsilon(study.id),
        }

    @app.post(f"{API_PREFIX}/studies/{{study_id}}/cancel", tags=["studies"])
    def cancel_study(study_id: str, user: User) -> dict[str, Any]:
        """Stop a study after its current round (its operator or the lead who submitted it)."""
        study = visible_study(user, study_id)
        if user.role not in ("operator", "study-lead"):
            raise HTTPException(403, f"a {user.role} may not cancel studies")
        try:
            study = store.set_study_status(study.id, "cancelled", f"cancelled by {user.name}")
        except ConflictError as err:
            raise HTTPException(409, str(err)) from None
        audit.person_action(
            "study-cancel-requested", user.name, study_id=study.id, role=user.role, via="api"
        )
        return _study_brief(study)

    @app.get(f"{API_PREFIX}/sites", tags=["sites"])
    def list_sites(user: User) -> list[dict[str, Any]]:
        """Registered sites: state, last seen, version, datasets offered."""
        now = datetime.now(timezone.utc)
        return [
            {
                "id": s.id,
                "state": site_state(s.status, s.last_seen, now, liveness_s),
                "last_seen": _iso(s.last_seen),
                "version": s.version,
                "datasets": sorted(s.datasets or {}),
            }
            for s in store.list_sites()
        ]

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    def openapi(user: User) -> dict[str, Any]:
        """The OpenAPI schema of this API (for any signed-in user, like every route)."""
        return app.openapi()

    return app
