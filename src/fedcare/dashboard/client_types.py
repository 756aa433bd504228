"""The JSON shapes the HTTP API answers with, as typed dicts for the client's callers
(``docs/api.md``; times are ISO 8601 UTC strings)."""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "AnalyticsJob",
    "ModelBrief",
    "ModelLineage",
    "PackageUpload",
    "RoundEntry",
    "RoundSite",
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


class RoundSite(TypedDict):
    """A site's part in a round: ``status`` is ``aggregated``, ``not used``, ``replied``,
    ``refused``, ``failed`` (``reason`` says why), ``timed out`` or ``sent``; the reply's kind
    and size (null while there is none, or for a round known only from its record); the
    site's evaluation ``metrics``; ``reply_s``: seconds from the round's start to its reply
    (from the round's record; null for a round still running or a site that did not reply)."""

    status: str
    reason: str | None
    reply_kind: str | None
    reply_bytes: int | None
    sent_at: str | None
    replied_at: str | None
    metrics: dict[str, float]
    reply_s: float | None


class RoundEntry(TypedDict):
    """A round of ``GET /studies/{id}/rounds`` (and a ``round`` event): ``status`` is
    ``completed``, ``running`` (its tasks are out) or ``stopped`` (the study ended before it
    was recorded); ``metrics``: the round's measurements and its evaluation's weighted means;
    ``sites``: each site's part in it."""

    round: int
    attempt: int
    status: str
    started_at: str | None
    finished_at: str | None
    metrics: dict[str, float]
    sites: dict[str, RoundSite]


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


class ModelBrief(TypedDict):
    """A registered model of ``GET /models`` (``fedcare models list``)."""

    version: str
    study_id: str
    study_name: str | None
    round: int
    model_hash: str
    parent: str | None
    sites: int
    created_at: str


class ModelLineage(TypedDict):
    """``GET /models/{version}/lineage``: the model itself, its ancestors (parent first) and
    descendants (oldest first), each a ModelBrief with ``visible: true``, or only
    ``{"version", "visible": false}`` for a model of a study the caller may not see."""

    version: str
    model: dict[str, Any]
    ancestors: list[dict[str, Any]]
    descendants: list[dict[str, Any]]


class AnalyticsJob(StudyBrief):
    """``GET /analytics/{id}`` and ``POST /analytics``: the job's brief, its dataset, queries
    (name and type), ``min_sites``, the stored spec and its ``result`` (None until answered)."""

    dataset: str | None
    queries: list[dict[str, Any]]
    min_sites: int | None
    spec: dict[str, Any] | None
    result: dict[str, Any] | None
