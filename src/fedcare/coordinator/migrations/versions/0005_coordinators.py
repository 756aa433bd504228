"""Coordinators: the liveness row of each coordinator process on this database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Written like 0001 to 0004 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
A running coordinator refreshes its row every ``beat_s`` seconds with its listen address, host
and pid, and marks it ``stopped`` when it stops; ``fedcare study submit`` refuses a study when
no row is fresh (:mod:`fedcare.coordinator.store_presence`). A database, unlike a pid file,
is shared by every host of a PostgreSQL deployment and is never left claiming a process that
died.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the ``coordinators`` table."""
    op.create_table(
        "coordinators",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("listen", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("beat_s", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'stopped')", name=op.f("ck_coordinators_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordinators")),
    )


def downgrade() -> None:
    """Drop the liveness rows (submissions can then no longer tell a running coordinator)."""
    op.drop_table("coordinators")
