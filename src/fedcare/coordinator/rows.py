"""What the store returns: frozen, detached snapshots of its rows (safe to share across threads)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "ActivityRow",
    "Checkpoint",
    "CoordinatorInfo",
    "ModelInfo",
    "ReplyInfo",
    "RoundBrief",
    "RoundInfo",
    "SiteError",
    "SiteInfo",
    "StudyInfo",
    "TaskInfo",
    "UserInfo",
    "snapshot",
]

T = TypeVar("T")


def snapshot(cls: type[T], row: object, **extra: Any) -> T:
    """A ``cls`` built from the same-named attributes of ORM ``row`` (``extra`` overrides)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: extra[n] if n in extra else getattr(row, n) for n in names})


@dataclass(frozen=True)
class SiteInfo:
    """A registered site."""

    id: str
    cert_serial: str
    status: str
    version: str | None
    datasets: Any
    first_seen: datetime | None
    last_seen: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class StudyInfo:
    """A study and where it stands."""

    id: str
    name: str
    config: dict[str, Any]
    seed: int
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    last_completed_round: int | None
    owner: str | None = None


@dataclass(frozen=True)
class RoundInfo:
    """A completed round: its record and the digests of its checkpoint artifacts."""

    study_id: str
    round: int
    status: str
    record: dict[str, Any]
    params_digest: str
    state_digest: str
    duration_s: float
    completed_at: datetime


@dataclass(frozen=True)
class TaskInfo:
    """One task for one site."""

    id: str
    study_id: str
    round: int
    attempt: int
    site_id: str
    kind: str
    status: str
    payload_digest: str | None
    created_at: datetime
    delivered_at: datetime | None
    deadline: datetime | None
    #: When its round closed it while it was open (a reply is refused as ``round_closed``).
    closed_at: datetime | None = None
    #: When its site first tried to send that late reply (not stored).
    late_at: datetime | None = None
    #: Its submission number (``#n`` in its key when not 0: a task sent again).
    submission: int = 0


@dataclass(frozen=True)
class ReplyInfo:
    """A site's reply to a task, with the task's study, round, attempt and kind."""

    task_id: str
    site_id: str
    study_id: str
    round: int
    attempt: int
    kind: str
    received_at: datetime
    payload_digest: str | None
    error_kind: str | None
    error_message: str | None
    num_samples: int

    @property
    def ok(self) -> bool:
        return self.error_kind is None


@dataclass(frozen=True)
class ModelInfo:
    """A registered model version: its study and round, artifact, hash, parent and card."""

    version: str
    study_id: str
    round: int
    artifact_digest: str
    model_hash: str
    parent: str | None
    card: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class CoordinatorInfo:
    """A coordinator process's liveness row: where it listens and when it was last alive."""

    id: str
    host: str
    pid: int
    listen: str
    status: str
    beat_s: float
    started_at: datetime
    seen_at: datetime
    stopped_at: datetime | None


class RoundBrief(NamedTuple):
    """What is shown of a recorded round: its number, record, duration and end (a
    :class:`RoundInfo` without the checkpoint digests)."""

    round: int
    record: dict[str, Any]
    duration_s: float
    completed_at: datetime


class ActivityRow(NamedTuple):
    """What is shown of one task: its round, site, kind and times, and its reply's
    (``received_at`` is None until one arrived)."""

    round: int
    attempt: int
    site_id: str
    kind: str
    status: str
    created_at: datetime
    delivered_at: datetime | None
    deadline: datetime | None
    received_at: datetime | None
    payload_digest: str | None
    error_kind: str | None
    error_message: str | None


class SiteError(NamedTuple):
    """A site's error reply to a task of a study's round."""

    study_id: str
    round: int
    kind: str
    error_kind: str
    error_message: str | None


class Checkpoint(NamedTuple):
    """The last completed round of a study: its number and its two artifacts' bytes."""

    round: int
    params: bytes
    state: bytes


@dataclass(frozen=True)
class UserInfo:
    """An API account (never its token or hash)."""

    name: str
    role: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
