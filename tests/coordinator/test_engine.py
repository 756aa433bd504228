"""Engine setup: SQLite pragmas, BEGIN IMMEDIATE for writers, bad URLs and failures reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.engine import WRITE_OPTION, make_engine
from fedcare.errors import ConfigError, StoreError


def test_sqlite_is_set_up_for_threads(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_s=7)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
    finally:
        engine.dispose()


def test_sqlite_writers_begin_immediate(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _log(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT 1"))
        with engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN", "BEGIN IMMEDIATE"]


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("mysql://u@h/db", "not supported"),
        ("not a url", "cannot be parsed"),
    ],
)
def test_bad_urls_are_config_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_engine(url)


def test_database_failures_are_store_errors(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    options = {"connect_args": {"connect_timeout": 2}}
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
        CoordinatorStore(url, tmp_path / "a", engine_options=options)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    with CoordinatorStore(db, tmp_path / "a", busy_timeout_s=0.1) as store:
        holder = make_engine(db)
        try:
            with holder.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                # another writer holds the lock past the busy timeout
                with conn.begin(), pytest.raises(StoreError, match="database is locked"):
                    store.register_site("A", "01")
        finally:
            holder.dispose()
        assert store.register_site("A", "01").id == "A"
