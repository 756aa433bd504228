"""Engines for the coordinator's database: SQLite (the default, a file) or PostgreSQL (by URL).

SQLite is set up for a multi-threaded server: WAL journal, a busy timeout, foreign keys on,
``check_same_thread=False`` and full fsync on commit; the database file is created owner-only
(``0600``, which SQLite's ``-wal`` and ``-shm`` files inherit). The Python driver's own transaction
handling is switched off, so SQLAlchemy's ``BEGIN`` is real: a transaction that writes opens
with ``BEGIN IMMEDIATE`` (it takes the database's write lock up front, so two writers queue on
the busy timeout instead of failing to upgrade a read lock), and a read-only one with a plain
deferred ``BEGIN``. Pass ``execution_options={WRITE_OPTION: True}`` to mark a transaction
as a writer (see :func:`fedcare.coordinator.store_base.StoreBase._tx`).

PostgreSQL needs nothing special; writers lock the rows they change (``FOR UPDATE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection

from fedcare.coordinator.files import private_sqlite
from fedcare.errors import ConfigError, NotFoundError

__all__ = ["WRITE_OPTION", "default_db_url", "make_engine"]


def default_db_url(home: Path) -> str:
    """The SQLite database in a coordinator's home folder (``HOME/coordinator.db``)."""
    return f"sqlite:///{(home / 'coordinator.db').resolve()}"


#: Execution option that marks a transaction as a writer (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "fedcare_write"


def make_engine(
    url: str | URL,
    *,
    busy_timeout_s: float = 30.0,
    engine_options: Mapping[str, Any] | None = None,
    create: bool = True,
) -> Engine:
    """Create the engine for ``url``, configured for concurrent use from several threads.

    Parameters
    ----------
    url:
        An SQLAlchemy URL: ``sqlite:///path/to/state.db`` or
        ``postgresql+psycopg://user@host:5432/db``.
    busy_timeout_s:
        SQLite only: how long a writer waits for the write lock before failing.
    engine_options:
        Extra keyword arguments for :func:`sqlalchemy.create_engine` (``pool_size``,
        ``echo``, ``connect_args``...).
    create:
        SQLite only: create the database file if it is missing (the default). With False a
        missing file is refused, so that opening never leaves an empty database behind.

    Returns
    -------
    Engine
        A configured engine (no connection is opened yet).

    Raises
    ------
    ConfigError
        If the URL cannot be parsed, names an in-memory SQLite database (each connection would
        see its own empty database), or names a backend other than SQLite or PostgreSQL.
    NotFoundError
        With ``create=False``, if the SQLite database file does not exist.
    """
    try:
        parsed = make_url(url)
    except Exception as err:
        raise ConfigError(f"database url {str(url)!r} cannot be parsed: {err}") from err
    options = dict(engine_options or {})
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise ConfigError(
                f"database url {parsed.render_as_string()!r} is an in-memory SQLite database; "
                "the coordinator needs a file (sqlite:///path/to/state.db)"
            )
        database = str(parsed.database)
        if not create and not database.startswith("file:") and not Path(database).is_file():
            raise NotFoundError(f"database file {database} does not exist")
        private_sqlite(database)  # 0600 before SQLite creates it (and its -wal, -shm)
        connect_args = {"check_same_thread": False, **options.pop("connect_args", {})}
        engine = create_engine(parsed, connect_args=connect_args, **options)
        _setup_sqlite(engine, busy_timeout_s)
        return engine
    if backend == "postgresql":
        options.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **options)
    raise ConfigError(
        f"database url {parsed.render_as_string()!r}: backend {backend!r} is not supported; "
        "use sqlite:///FILE or postgresql+psycopg://..."
    )


def _setup_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    """Pragmas on every new connection; real BEGIN (IMMEDIATE for writers) on every transaction."""
    timeout_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver-level autocommit: SQLAlchemy's "begin" event below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
