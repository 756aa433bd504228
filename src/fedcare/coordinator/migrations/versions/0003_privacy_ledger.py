"""Privacy ledger: the coordinator's mirror of the sites' epsilon spends.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Written from Alembic's autogenerate output and reviewed, like 0001 and 0002: names follow
:data:`fedcare.coordinator.db.NAMING_CONVENTION`. One row per (study, round, site, dataset):
the round's DP events (JSON) and the site's epsilon on the dataset after it. The rows are
written in the same transaction as the round (``record_round``), so a crash never leaves a
round without its ledger entries or entries without their round.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the ``privacy_ledger`` table and its (site, dataset) index."""
    op.create_table(
        "privacy_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("epsilon_after", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_privacy_ledger_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_ledger")),
        sa.UniqueConstraint(
            "study_id",
            "round",
            "site_id",
            "dataset",
            name=op.f("uq_privacy_ledger_study_id_round_site_id_dataset"),
        ),
    )
    op.create_index(
        op.f("ix_privacy_ledger_site_id_dataset"), "privacy_ledger", ["site_id", "dataset"]
    )


def downgrade() -> None:
    """Drop the mirror ledger (the sites keep their own)."""
    op.drop_index(op.f("ix_privacy_ledger_site_id_dataset"), table_name="privacy_ledger")
    op.drop_table("privacy_ledger")
