"""Alembic environment: migrates the coordinator database to ``fedcare.coordinator.db``.

Run through :func:`fedcare.coordinator.migrate.upgrade`, which passes an open connection in
``config.attributes["connection"]`` (inside a transaction it owns). Offline mode (``--sql``)
renders SQL for the URL in the ``sqlalchemy.url`` option.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from fedcare.coordinator.db import metadata
from fedcare.coordinator.engine import WRITE_OPTION, make_engine


def _options(dialect_name: str) -> dict[str, Any]:
    # SQLite cannot ALTER most things: future revisions use batch mode (copy and move).
    return {
        "target_metadata": metadata,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
    }


def _run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    dialect = (url or "").split(":", 1)[0].split("+", 1)[0]
    context.configure(url=url, literal_binds=True, **_options(dialect))
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set the sqlalchemy.url option or pass a connection")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run_on(conn.execution_options(**{WRITE_OPTION: True}))
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
