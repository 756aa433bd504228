"""The JSON shapes the HTTP API answers with, as typed dicts for the client's callers
(``docs/api.md``; times are ISO 8601 UTC strings)."""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "PackageUpload",
    "RoundEntry",
    "SiteEntry",
    "StudyBrief",
    "StudyDetail",
    "SubmitResult",
]


class StudyBrief(TypedDict):
    """A study as ``GET /studies`` lists it (times: ISO 8601 UTC)."""

    id: str
    name: str
    status: str
    reason: str | None
    rounds_done: int | None
    rounds_total: int | None
    owner: str | None
    created_at: str
    updated_at: str


class StudyDetail(StudyBrief):
    """``GET /studies/{id}``: the brief with rounds, the last round per site, refusals, epsilon."""

    rounds: list[dict[str, Any]]
    last_round_sites: dict[str, dict[str, Any]]
    refusals: list[str]
    epsilon_spent: dict[str, float]


class SubmitResult(StudyBrief):
    """``POST /studies``: the new study, and the warnings of a queued submission."""

    warnings: list[str]


class RoundEntry(TypedDict):
    """A round of ``GET /studies/{id}/rounds`` (``sites``: each site's part in it)."""

    round: int
    attempt: int
    status: str
    started_at: str | None
    finished_at: str | None
    metrics: dict[str, float]
    sites: dict[str, dict[str, Any]]


class SiteEntry(TypedDict):
    """A site of ``GET /sites``."""

    id: str
    state: str
    last_seen: str | None
    version: str | None
    datasets: list[str]


class PackageUpload(TypedDict):
    """``POST /packages``: the stored package's hash, name and version."""

    package: str
    name: str
    version: str
