"""What a person is shown of a study's and a site's state: shared by ``fedcare study status``,
``fedcare sites`` and the HTTP API (:mod:`fedcare.dashboard.api`), so both say the same."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from fedcare.errors import ConfigError, NotFoundError

__all__ = [
    "error_line",
    "is_refusal",
    "latest_site_errors",
    "resolve_study_id",
    "schema_refusal_line",
    "schema_refusals",
    "site_refusals",
    "site_state",
]


def site_refusals(store: Any, study_id: str, *, limit: int = 20) -> list[str]:
    """The latest error reply of each site to a study, as lines for an operator."""
    latest = latest_site_errors(store, study_id)
    return [latest[s] for s in sorted(latest)][:limit]


def latest_site_errors(
    store: Any, study_id: str, *, min_round: int = 0, max_round: int | None = None
) -> dict[str, str]:
    """``{site: line}``: each site's latest error reply to the study in rounds ``min_round``
    to ``max_round`` (one query: :meth:`~fedcare.coordinator.store_tasks.TasksMixin.
    study_activity` of the tasks answered with an error)."""
    latest: dict[str, str] = {}
    found = store.study_activity(
        study_id, min_round=min_round, max_round=max_round, errors_only=True
    )
    for _, reply in found:
        latest[reply.site_id] = error_line(reply.site_id, reply)
    return latest


def error_line(site_id: str, reply: Any) -> str:
    """A site's error reply (with ``round``, ``kind``, ``error_kind`` and ``error_message``:
    a :class:`~fedcare.coordinator.rows.ReplyInfo` or ``SiteError``) as a line for an
    operator."""
    verb = "refused" if is_refusal(reply.error_kind) else "failed"
    return (
        f"site {site_id} {verb} round {reply.round} ({reply.kind}): "
        f"{reply.error_kind}: {reply.error_message}"
    )


def schema_refusal_line(site_id: str, reason: Any) -> str:
    """A site the coordinator refused at round 0 (its feature schema differs), as a line."""
    return f"site {site_id} refused for this study: {reason}"


def schema_refusals(store: Any, study_id: str, *, rounds: Sequence[Any] | None = None) -> list[str]:
    """The sites the coordinator refused for a study at round 0 (their feature schema differs
    from the study's), as lines for an operator; ``rounds``: the study's rounds if already
    read."""
    if rounds is None:
        try:
            rounds = [store.get_round(study_id, 0)]
        except NotFoundError:
            rounds = []
    start = [r for r in rounds if r.round == 0]
    refused = (start[0].record or {}).get("refused_sites", {}) if start else {}
    return [schema_refusal_line(site, refused[site]) for site in sorted(refused)]


def is_refusal(kind: str) -> bool:
    """Whether a reply's error kind is a site's refusal (policy, plan, approval, budget...)."""
    return kind.startswith(
        ("policy-", "plan-", "approval-", "approvals-", "privacy-budget", "package-")
    )


def site_state(status: str, last_seen: datetime | None, now: datetime, liveness_s: float) -> str:
    """What ``fedcare sites`` shows for a site: its registry status unless ``active``; an
    active site is ``connected`` when seen within ``liveness_s``, else ``stale (last seen …)``
    (or ``never connected``)."""
    if status != "active":
        return status
    if last_seen is None:
        return "never connected"
    if last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=timezone.utc)
    age = (now - last_seen).total_seconds()
    if age <= liveness_s:
        return "connected"
    ago = (
        f"{age:.0f} s"
        if age < 120
        else f"{age / 60:.0f} min"
        if age < 7200
        else f"{age / 3600:.0f} h"
    )
    return f"stale (last seen {ago} ago)"


def resolve_study_id(store: Any, given: str) -> str:
    """The study id that ``given`` names: a whole id, or a unique prefix of one (a trailing
    ``…`` copied from a cut table is ignored).

    Raises
    ------
    ConfigError
        If the prefix matches several studies (names them).
    """
    text = given.strip().rstrip("…").rstrip(".")
    ids = [s.id for s in store.list_studies()]
    if text in ids or not text:
        return text or given
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) > 1:
        raise ConfigError(f"study id prefix {text!r} matches {len(matches)} studies: "
                          f"{', '.join(sorted(matches))}; give more of the id")  # fmt: skip
    return matches[0] if matches else given
