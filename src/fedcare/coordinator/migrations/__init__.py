"""Alembic environment of the coordinator's database (run through :mod:`..migrate`)."""
