"""Deadline-bound rounds: when a round closed a task, and when a late reply to it came.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Written like 0001 to 0007 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
``tasks.closed_at``: the task expired because its round closed (its quorum replied and the
grace period passed, or its deadline came) while the task was open; a reply to it is refused
as ``round_closed``. ``tasks.late_at``: when a site first tried to send a reply to such a
task; the reply itself is not stored (it belongs to no round).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the nullable ``tasks.closed_at`` and ``tasks.late_at``."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("late_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop them (late replies were never stored: nothing else is lost)."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("late_at")
        batch.drop_column("closed_at")
