"""Audit anchors: each site's audit head, countersigned by the coordinator.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Written like 0001 to 0003 (names follow :data:`fedcare.coordinator.db.NAMING_CONVENTION`).
One row per head a site presented with ``Anchor``: ``anchored`` (countersigned) or
``rollback`` (it contradicted an earlier anchor: the site's log was rolled back or rewritten),
so a rollback is detected without an outside ``--witness`` (:mod:`fedcare.coordinator.anchoring`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the ``audit_anchors`` table and its (site, seq) index."""
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("site_sig", sa.Text(), nullable=False),
        sa.Column("countersig", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('anchored', 'rollback')", name=op.f("ck_audit_anchors_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_anchors")),
    )
    op.create_index(op.f("ix_audit_anchors_site_id_seq"), "audit_anchors", ["site_id", "seq"])


def downgrade() -> None:
    """Drop the anchors (the sites keep their countersigned copies)."""
    op.drop_index(op.f("ix_audit_anchors_site_id_seq"), table_name="audit_anchors")
    op.drop_table("audit_anchors")
