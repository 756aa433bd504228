"""The coordinator's SQL schema: sites, studies, rounds, tasks and replies.

Typed SQLAlchemy 2 ORM classes, portable between SQLite and PostgreSQL: JSON columns use the
generic ``JSON`` type (TEXT on SQLite, ``json`` on PostgreSQL) and every timestamp is a
timezone-aware UTC ``datetime`` in Python (:class:`UTCDateTime`). Status columns are short
strings guarded by named CHECK constraints; every constraint and index has a deterministic name
(:data:`NAMING_CONVENTION`) so migrations can refer to it on both backends.

The migrations ``migrations/versions/0001_initial.py`` (sites to replies), ``0002_models.py``
(the model registry), ``0003_privacy_ledger.py`` (the privacy ledger) and
``0004_audit_anchors.py`` (sites' countersigned audit heads), ``0005_coordinators.py`` (the
running coordinator's liveness row), ``0006_users.py`` (API accounts, study owners) and
``0007_deployments.py`` (models sent to sites, their answers and monitoring summaries) and
``0008_late_replies.py`` (tasks closed with their round, late replies to them) and
``0009_task_submissions.py`` (the submission number in a resent task's key) create exactly
this schema;
a test compares the migrated database with :data:`metadata`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ANCHOR_STATUSES",
    "COORDINATOR_STATUSES",
    "DEPLOYMENT_STATUSES",
    "NAMING_CONVENTION",
    "REPLY_ERROR_KINDS_MAX",
    "ROUND_STATUSES",
    "SITE_STATUSES",
    "STUDY_STATUSES",
    "TASK_STATUSES",
    "USER_ROLES",
    "AuditAnchorRow",
    "Base",
    "CoordinatorRow",
    "DeploymentRow",
    "ModelRow",
    "PrivacyLedgerRow",
    "ReplyRow",
    "RoundRow",
    "SiteRow",
    "StudyRow",
    "TaskRow",
    "UTCDateTime",
    "UserRow",
    "metadata",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SITE_STATUSES = ("active", "revoked", "withdrawn")
STUDY_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
ROUND_STATUSES = ("completed",)
TASK_STATUSES = ("pending", "delivered", "replied", "expired", "failed")
REPLY_ERROR_KINDS_MAX = 64
ANCHOR_STATUSES = ("anchored", "rollback")
COORDINATOR_STATUSES = ("running", "stopped")
#: requested (not yet delivered), delivered (sent, no answer yet), pending (the site's steward
#: has not decided), taken, refused (by the steward), failed (a check or the site failed).
DEPLOYMENT_STATUSES = ("requested", "delivered", "pending", "taken", "refused", "failed")
USER_ROLES = ("operator", "study-lead", "auditor")

ID_LEN = 128
DIGEST_LEN = 64


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamp with time zone``; SQLite, which has no time zones, stores the
    UTC wall time. Binding a naive ``datetime`` is a programming error and raises ``ValueError``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware, got naive {value!r}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Declarative base of the coordinator's tables."""

    metadata = metadata


class SiteRow(Base):
    """A provisioned site (hospital): certificate, status, agent version and datasets."""

    __tablename__ = "sites"
    __table_args__ = (CheckConstraint(_one_of("status", SITE_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    cert_serial: Mapped[str] = mapped_column(String(ID_LEN))
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(64))
    datasets: Mapped[Any] = mapped_column(JSON, nullable=False)
    first_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StudyRow(Base):
    """A study: its config, seed, status and the last round that completed."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint(_one_of("status", STUDY_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[Any] = mapped_column(JSON, nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_completed_round: Mapped[int | None] = mapped_column(Integer)
    #: The API user who submitted it; None for a study submitted on the coordinator's host.
    owner: Mapped[str | None] = mapped_column(String(ID_LEN))


class RoundRow(Base):
    """A completed round: its record (measurements, evaluation) and checkpoint digests."""

    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("study_id", "round"),
        CheckConstraint(_one_of("status", ROUND_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    record: Mapped[Any] = mapped_column(JSON, nullable=False)
    params_digest: Mapped[str] = mapped_column(String(DIGEST_LEN))
    state_digest: Mapped[str] = mapped_column(String(DIGEST_LEN))
    duration_s: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TaskRow(Base):
    """One task for one site in one attempt of one round, and where it is in its life."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_one_of("status", TASK_STATUSES), name="status"),
        Index(None, "site_id", "status", "created_at"),
        Index(None, "study_id", "round", "attempt"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    round: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    payload_digest: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the task expired because its round closed while it was open (migration 0008).
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When its site first tried to reply after that (the late reply is not stored).
    late_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Its submission number: 0, or ``n`` for a task sent again with the same study, round,
    #: kind and site, whose key is ``study/round/kind/site#n`` (migration 0009).
    submission: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ReplyRow(Base):
    """A site's answer to a task: a payload digest and sample count, or an error."""

    __tablename__ = "replies"
    __table_args__ = (
        CheckConstraint(
            "(payload_digest IS NULL) <> (error_kind IS NULL)", name="payload_xor_error"
        ),
        CheckConstraint("num_samples >= 0", name="num_samples"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), unique=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload_digest: Mapped[str | None] = mapped_column(String(DIGEST_LEN))
    error_kind: Mapped[str | None] = mapped_column(String(REPLY_ERROR_KINDS_MAX))
    error_message: Mapped[str | None] = mapped_column(Text)
    num_samples: Mapped[int] = mapped_column(Integer)


class ModelRow(Base):
    """A registered model version: its artifact, hash, parent and card (migration 0002)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("study_id", "round"), Index(None, "model_hash"))

    version: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    round: Mapped[int] = mapped_column(Integer)
    artifact_digest: Mapped[str] = mapped_column(String(DIGEST_LEN))
    model_hash: Mapped[str] = mapped_column(String(80))
    parent: Mapped[str | None] = mapped_column(ForeignKey("models.version"))
    card: Mapped[Any] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PrivacyLedgerRow(Base):
    """The coordinator's mirror of the sites' privacy ledgers: one row per (study, round, site,
    dataset) with the round's DP events and the site's epsilon on the dataset after it
    (migration 0003), written in the round's transaction."""

    __tablename__ = "privacy_ledger"
    __table_args__ = (
        UniqueConstraint("study_id", "round", "site_id", "dataset"),
        Index(None, "site_id", "dataset"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    round: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[str] = mapped_column(String(ID_LEN))
    dataset: Mapped[str] = mapped_column(String(200))
    events: Mapped[Any] = mapped_column(JSON, nullable=False)
    epsilon_after: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditAnchorRow(Base):
    """A site's audit head as the site presented it (migration 0004): ``anchored`` rows are
    countersigned by the coordinator; ``rollback`` rows record a head that contradicted an
    earlier anchor (the site's log was rolled back or rewritten), with the reason."""

    __tablename__ = "audit_anchors"
    __table_args__ = (
        CheckConstraint(_one_of("status", ANCHOR_STATUSES), name="status"),
        Index(None, "site_id", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(ID_LEN))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    site_sig: Mapped[str] = mapped_column(Text)
    countersig: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    anchored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CoordinatorRow(Base):
    """A coordinator process on this database (migration 0005): where it listens, on which
    host and pid, and when it last said it was alive (every ``beat_s`` seconds while it runs;
    ``stopped`` once it stopped cleanly). ``fedcare study submit`` reads it."""

    __tablename__ = "coordinators"
    __table_args__ = (CheckConstraint(_one_of("status", COORDINATOR_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    listen: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    beat_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A person's API account: role, scrypt hash of the token, expiry, revocation."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("role", USER_ROLES), name="role"),
        UniqueConstraint("token_id"),
    )

    name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(DIGEST_LEN * 2))
    salt: Mapped[str] = mapped_column(String(DIGEST_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeploymentRow(Base):
    """A model version sent to one site (migration 0007): who asked, the bundle hash that was
    signed, the site's answer (status, reason, the hash it keeps, who approved) and the latest
    monitoring summary the site sent for it."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(_one_of("status", DEPLOYMENT_STATUSES), name="status"),
        Index(None, "version"),
        Index(None, "site_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    version: Mapped[str] = mapped_column(ForeignKey("models.version"))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    bundle_sha256: Mapped[str] = mapped_column(String(80))
    stored_sha256: Mapped[str | None] = mapped_column(String(80))
    approved_by: Mapped[str | None] = mapped_column(String(ID_LEN))
    requested_by: Mapped[str] = mapped_column(String(ID_LEN))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    monitoring: Mapped[Any | None] = mapped_column(JSON)
    monitoring_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
