"""Model registry: one row per registered model version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Written from Alembic's autogenerate output and reviewed, like 0001: names follow
:data:`fedcare.coordinator.db.NAMING_CONVENTION`. ``parent`` refers to another version (the
model a continued study started from); ``(study_id, round)`` is unique, so registering a
study's final model twice (a runner resumed after a crash) is detected.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the ``models`` table and its index."""
    op.create_table(
        "models",
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("study_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("artifact_digest", sa.String(length=64), nullable=False),
        sa.Column("model_hash", sa.String(length=80), nullable=False),
        sa.Column("parent", sa.String(length=128), nullable=True),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent"], ["models.version"], name=op.f("fk_models_parent_models")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_models_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_models")),
        sa.UniqueConstraint("study_id", "round", name=op.f("uq_models_study_id_round")),
    )
    op.create_index(op.f("ix_models_model_hash"), "models", ["model_hash"])


def downgrade() -> None:
    """Drop the model registry (the model artifacts stay in the artifact folder)."""
    op.drop_index(op.f("ix_models_model_hash"), table_name="models")
    op.drop_table("models")
