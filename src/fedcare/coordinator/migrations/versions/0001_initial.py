"""Initial schema: sites, studies, rounds, tasks and replies.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written from Alembic's autogenerate output and reviewed: timestamps are plain
``DateTime(timezone=True)`` (the ORM's ``UTCDateTime`` decorates that type), every constraint
and index is named as :data:`fedcare.coordinator.db.NAMING_CONVENTION` names it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _status(table: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"status IN ({allowed})", name=op.f(f"ck_{table}_status"))


def upgrade() -> None:
    """Create the five tables and their indexes."""
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("cert_serial", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        _ts("first_seen", nullable=True),
        _ts("last_seen", nullable=True),
        _ts("created_at", nullable=False),
        _status("sites", ("active", "revoked", "withdrawn")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.Column("last_completed_round", sa.Integer(), nullable=True),
        _status("studies", ("pending", "running", "completed", "failed", "cancelled")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("params_digest", sa.String(length=64), nullable=False),
        sa.Column("state_digest", sa.String(length=64), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        _ts("completed_at", nullable=False),
        _status("rounds", ("completed",)),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_rounds_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("study_id", "round", name=op.f("uq_rounds_study_id_round")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=True),
        _ts("created_at", nullable=False),
        _ts("delivered_at", nullable=True),
        _ts("deadline", nullable=True),
        _status("tasks", ("pending", "delivered", "replied", "expired", "failed")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_tasks_site_id_sites")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_tasks_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(
        op.f("ix_tasks_site_id_status_created_at"), "tasks", ["site_id", "status", "created_at"]
    )
    op.create_index(
        op.f("ix_tasks_study_id_round_attempt"), "tasks", ["study_id", "round", "attempt"]
    )
    op.create_table(
        "replies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        _ts("received_at", nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=True),
        sa.Column("error_kind", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "(payload_digest IS NULL) <> (error_kind IS NULL)",
            name=op.f("ck_replies_payload_xor_error"),
        ),
        sa.CheckConstraint("num_samples >= 0", name=op.f("ck_replies_num_samples")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_replies_site_id_sites")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_replies_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
        sa.UniqueConstraint("task_id", name=op.f("uq_replies_task_id")),
    )


def downgrade() -> None:
    """Drop the five tables (and so every coordinator record)."""
    op.drop_table("replies")
    op.drop_index(op.f("ix_tasks_study_id_round_attempt"), table_name="tasks")
    op.drop_index(op.f("ix_tasks_site_id_status_created_at"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("rounds")
    op.drop_table("studies")
    op.drop_table("sites")
