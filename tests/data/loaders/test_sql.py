"""SQL loader on SQLite and PostgreSQL: tables, bound parameters, read-only use, safe errors."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from fedcare.data.loaders import load_table
from fedcare.data.loaders.sql import safe_url
from fedcare.errors import ConfigError, DataError

PG_URL = os.environ.get(
    "FEDCARE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ROWS = [(1, "a", 63.0), (2, "b", 41.5), (3, "a", 57.0), (4, "c", None)]


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "site.db") as conn:
        conn.execute("CREATE TABLE patients (id INTEGER, site TEXT, age REAL)")
        conn.executemany("INSERT INTO patients VALUES (?, ?, ?)", ROWS)
    conn.close()
    return tmp_path


def test_sqlite_table_relative_to_base_dir(sqlite_dir: Path) -> None:
    source = {"kind": "sql", "url": "sqlite:///site.db", "table": "patients"}
    df = load_table(source, base_dir=sqlite_dir)
    assert list(df.columns) == ["id", "site", "age"]
    assert df["id"].tolist() == [1, 2, 3, 4]
    assert df["age"].sum() == pytest.approx(63.0 + 41.5 + 57.0)


def test_sqlite_query_with_bound_parameters(sqlite_dir: Path) -> None:
    # The value carries SQL syntax: bound as a parameter it is just an unmatched string.
    query = "SELECT id, age FROM patients WHERE site = :site ORDER BY id"
    df = load_table(
        {"kind": "sql", "url": "sqlite:///site.db", "query": query, "params": {"site": "a"}},
        base_dir=sqlite_dir,
    )
    assert df["id"].tolist() == [1, 3]
    evil = {"site": "a' OR '1'='1"}
    df = load_table(
        {"kind": "sql", "url": "sqlite:///site.db", "query": query, "params": evil},
        base_dir=sqlite_dir,
    )
    assert len(df) == 0
    assert list(df.columns) == ["id", "age"]


def test_sqlite_is_read_only(sqlite_dir: Path) -> None:
    url = f"sqlite:///{sqlite_dir / 'site.db'}"
    with pytest.raises(DataError, match="readonly database"):
        load_table({"kind": "sql", "url": url, "query": "DELETE FROM patients"})
    with sqlite3.connect(sqlite_dir / "site.db") as conn:
        assert conn.execute("SELECT count(*) FROM patients").fetchone() == (len(ROWS),)
    conn.close()


def test_sqlite_errors_name_the_url_table_and_file(sqlite_dir: Path) -> None:
    with pytest.raises(DataError, match=r"SQL source sqlite:///site\.db: no table 'visits'"):
        load_table(
            {"kind": "sql", "url": "sqlite:///site.db", "table": "visits"}, base_dir=sqlite_dir
        )
    with pytest.raises(DataError, match="no such table: visits"):
        load_table(
            {"kind": "sql", "url": "sqlite:///site.db", "query": "SELECT * FROM visits"},
            base_dir=sqlite_dir,
        )
    missing = sqlite_dir / "other.db"
    with pytest.raises(DataError, match=f"SQLite file {missing} does not exist"):
        load_table({"kind": "sql", "url": "sqlite:///other.db", "table": "t"}, base_dir=sqlite_dir)
    assert not missing.exists()  # nothing created on the way


def test_columns_subset(sqlite_dir: Path) -> None:
    source = {"kind": "sql", "url": "sqlite:///site.db", "table": "patients", "columns": ["age"]}
    assert list(load_table(source, base_dir=sqlite_dir).columns) == ["age"]


def test_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"source\.url is not a database URL"):
        load_table({"kind": "sql", "url": "not a url", "query": "SELECT 1"})
    with pytest.raises(ConfigError, match="must name an SQLite file"):
        load_table({"kind": "sql", "url": "sqlite://", "query": "SELECT 1"})
    with pytest.raises(ConfigError, match="cannot use this database"):
        load_table({"kind": "sql", "url": "nosuchdb://u:p@h/d", "query": "SELECT 1"})


def test_password_never_shown() -> None:
    url = "postgresql+psycopg://reader:s3cret-pw@127.0.0.1:1/clinic"
    assert safe_url(url) == "postgresql+psycopg://reader:***@127.0.0.1:1/clinic"
    with pytest.raises(DataError) as info:
        load_table({"kind": "sql", "url": url, "query": "SELECT 1"})
    assert "reader:***@127.0.0.1:1/clinic" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[tuple[Engine, str]]:
    """A throwaway schema with one table on the local PostgreSQL, dropped afterwards."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        admin.dispose()
        where = make_url(PG_URL).render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL not reachable at {where} ({type(err).__name__})")
    schema = f"fedcare_loaders_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f'CREATE TABLE "{schema}".patients (id int, site text, age float)'))
        conn.execute(
            text(f'INSERT INTO "{schema}".patients VALUES (:i, :s, :a)'),
            [{"i": i, "s": s, "a": a} for i, s, a in ROWS],
        )
    yield admin, schema
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_postgresql_table_and_query(pg_schema: tuple[Engine, str]) -> None:
    _, schema = pg_schema
    df = load_table({"kind": "sql", "url": PG_URL, "table": "patients", "schema": schema})
    assert sorted(df["id"].tolist()) == [1, 2, 3, 4]
    query = f'SELECT id, age FROM "{schema}".patients WHERE age > :min ORDER BY id'
    df = load_table({"kind": "sql", "url": PG_URL, "query": query, "params": {"min": 50}})
    assert df["id"].tolist() == [1, 3]
    assert df["age"].tolist() == pytest.approx([63.0, 57.0])


def test_postgresql_is_read_only(pg_schema: tuple[Engine, str]) -> None:
    admin, schema = pg_schema
    query = f'DELETE FROM "{schema}".patients RETURNING id'
    with pytest.raises(DataError, match="read-only transaction"):
        load_table({"kind": "sql", "url": PG_URL, "query": query})
    with admin.connect() as conn:
        count = conn.execute(text(f'SELECT count(*) FROM "{schema}".patients')).scalar_one()
    assert count == len(ROWS)


def test_postgresql_missing_table_names_schema(pg_schema: tuple[Engine, str]) -> None:
    _, schema = pg_schema
    with pytest.raises(DataError, match=f"no table '{schema}.visits'"):
        load_table({"kind": "sql", "url": PG_URL, "table": "visits", "schema": schema})
