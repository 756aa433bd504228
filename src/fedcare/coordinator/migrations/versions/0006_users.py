"""Users: the accounts of the HTTP API, and the owner of a study.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Written like 0001 to 0005 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
A user has a role (operator, study-lead, auditor) and one API token, stored as the scrypt hash
of its secret with a per-user salt; ``token_id`` (the token's public prefix) finds the row.
``studies.owner`` names the user who submitted a study through the API (NULL for a study
submitted on the coordinator's host).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``users``; add the nullable ``studies.owner``."""
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('operator', 'study-lead', 'auditor')", name=op.f("ck_users_role")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
        sa.UniqueConstraint("token_id", name=op.f("uq_users_token_id")),
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=128), nullable=True))


def downgrade() -> None:
    """Drop the accounts and the study owners."""
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("owner")
    op.drop_table("users")
