"""Task submissions: the number that makes a resent task's key unique.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Written like 0001 to 0008 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
``tasks.submission``: 0 for every task until now; ``n`` for a task an asynchronous study
(FedBuff) sent again to a site with the same round (model version) and kind, whose key is then
``study/round/kind/site#n``, so a late reply to the earlier task cannot answer it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``tasks.submission`` (0 for the tasks already stored)."""
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("submission", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop it (resent tasks' keys then name their round's newest attempt again)."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("submission")
