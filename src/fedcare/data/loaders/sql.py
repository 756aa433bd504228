"""SQL sources: a query or a whole table from a database URL, through SQLAlchemy, read only.

The connection is put in read-only mode where we know how (PostgreSQL: ``SET TRANSACTION READ
ONLY``; SQLite: the file is opened with ``mode=ro``) and the transaction is rolled back at the
end. For other databases, give the site a database user that can only read. User values reach
the database only as bound parameters (``params``) or as quoted identifiers (``table``,
``schema``), never by string formatting. Error messages show the URL with its password masked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from fedcare.data.loaders.base import SqlSource, resolve_path
from fedcare.data.loaders.csv import select_columns
from fedcare.errors import ConfigError, DataError

__all__ = ["load_sql", "safe_url"]


def safe_url(url: str | URL) -> str:
    """The URL as text with its password masked (``***``); unparsable ones are elided."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"


def load_sql(spec: SqlSource, base_dir: Path | None) -> pd.DataFrame:
    """Run the spec's query (or read its table) and return the rows.

    Raises
    ------
    ConfigError
        The URL cannot be parsed or names a driver that is not installed.
    DataError
        The database cannot be reached, the table does not exist or the query fails; the
        message names the URL without its password.
    """
    url, shown = _resolve_url(spec.url, base_dir)
    engine = _engine(url, shown)
    try:
        with engine.connect() as conn:
            _read_only(conn)
            try:
                frame = _read(conn, spec, shown)
            finally:
                conn.rollback()
    except sa.exc.SQLAlchemyError as err:
        raise DataError(f"SQL source {shown}: {_reason(err, url)}") from None
    finally:
        engine.dispose()
    return select_columns(frame, spec.columns, f"SQL source {shown}")


def _resolve_url(text: str, base_dir: Path | None) -> tuple[URL, str]:
    """The URL to connect to, and the one to show in messages (as given, password masked)."""
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise ConfigError("source.url is not a database URL (value not shown)") from None
    if url.get_backend_name() != "sqlite":
        return url, safe_url(url)
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise ConfigError(f"source.url must name an SQLite file, got {safe_url(url)}")
    path = resolve_path(url.database, base_dir)
    if not path.is_file():
        raise DataError(f"SQL source {safe_url(url)}: SQLite file {path} does not exist")
    # Opened read-only by SQLite itself: a query cannot write, and no empty file is created.
    ro = url.set(database=f"file:{path.resolve().as_posix()}?mode=ro", query={"uri": "true"})
    return ro, safe_url(url)


def _engine(url: URL, shown: str) -> Engine:
    try:
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
        raise ConfigError(f"source.url {shown}: cannot use this database ({err})") from None


def _read_only(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))


def _read(conn: Connection, spec: SqlSource, shown: str) -> pd.DataFrame:
    if spec.table is not None:
        inspector = sa.inspect(conn)
        if not inspector.has_table(spec.table, schema=spec.db_schema):
            where = f"{spec.db_schema}.{spec.table}" if spec.db_schema else spec.table
            raise DataError(f"SQL source {shown}: no table {where!r}")
        table = sa.Table(spec.table, sa.MetaData(), schema=spec.db_schema, autoload_with=conn)
        statement: sa.Executable = sa.select(table)
    else:
        assert spec.query is not None
        statement = sa.text(spec.query)
    result = conn.execute(statement, dict(spec.params)) if spec.params else conn.execute(statement)
    if not result.returns_rows:
        raise DataError(f"SQL source {shown}: the query returned no rows (is it a SELECT?)")
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _reason(err: sa.exc.SQLAlchemyError, url: URL) -> str:
    """The driver's first line of explanation, with the password removed if it shows."""
    orig = getattr(err, "orig", None)
    text = str(orig) if orig is not None else str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if url.password:
        first = first.replace(str(url.password), "***")
    return first
