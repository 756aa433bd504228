"""Alembic revisions of the coordinator's database, oldest first."""
