"""Deployments: model versions sent to sites, their answers and monitoring summaries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Written like 0001 to 0006 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
One row per (request, site): the version, the bundle hash the coordinator signed, who asked,
the site's answer (``taken`` with the hash it keeps and who approved, ``refused`` or
``failed`` with the reason) and the latest monitoring summary the site sent for it
(:mod:`fedcare.coordinator.deployments`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_STATUSES = "'requested', 'delivered', 'pending', 'taken', 'refused', 'failed'"


def upgrade() -> None:
    """Create the ``deployments`` table and its indexes."""
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("bundle_sha256", sa.String(length=80), nullable=False),
        sa.Column("stored_sha256", sa.String(length=80), nullable=True),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("monitoring", sa.JSON(), nullable=True),
        sa.Column("monitoring_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_deployments_status")),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_deployments_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["version"], ["models.version"], name=op.f("fk_deployments_version_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(op.f("ix_deployments_version"), "deployments", ["version"])
    op.create_index(op.f("ix_deployments_site_id_status"), "deployments", ["site_id", "status"])


def downgrade() -> None:
    """Drop the deployments (the sites keep the models they took)."""
    op.drop_index(op.f("ix_deployments_site_id_status"), table_name="deployments")
    op.drop_index(op.f("ix_deployments_version"), table_name="deployments")
    op.drop_table("deployments")
