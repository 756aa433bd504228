"""Migrations: an empty database reaches head, and head is exactly the ORM's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Column, Integer, MetaData, Table, inspect, text

from fedcare.coordinator import CoordinatorStore, current_revision, head_revision, upgrade
from fedcare.coordinator.db import metadata
from fedcare.coordinator.engine import make_engine
from fedcare.coordinator.migrate import MIGRATIONS_DIR, alembic_config, packaged_head
from fedcare.errors import StoreError

TABLES = {"sites", "studies", "rounds", "tasks", "replies", "models"}


def _diffs(url: str | URL, target: MetaData = metadata) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, target))
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head_and_matches_the_orm(empty_db_url: str | URL) -> None:
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision() == "0009"
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
    assert _diffs(empty_db_url) == []


def test_the_comparison_would_see_a_drift(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url)
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("extra", drifted, Column("id", Integer, primary_key=True))
    diffs = _diffs(empty_db_url, drifted)
    assert [d[0] for d in diffs if isinstance(d, tuple)] == ["add_table"]


def test_upgrade_is_idempotent_and_runs_when_a_store_opens(
    empty_db_url: str | URL, tmp_path: Path
) -> None:
    with CoordinatorStore(empty_db_url, tmp_path / "a") as store:
        site = store.register_site("A", "01")
    upgrade(empty_db_url)
    with CoordinatorStore(empty_db_url, tmp_path / "a") as store:
        assert store.get_site("A") == site
    assert current_revision(empty_db_url) == head_revision()


def test_an_older_database_is_brought_to_head(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url)
    command.downgrade(_config_on(empty_db_url), "base")
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    assert _diffs(empty_db_url) == []


def _config_on(url: str | URL) -> Config:
    rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return alembic_config(rendered)


def test_an_unknown_revision_is_a_clear_error(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url)
    with pytest.raises(StoreError, match=r"revision 'nope'"):
        upgrade(empty_db_url, "nope")


def test_the_environment_ships_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert not list(MIGRATIONS_DIR.glob("*.ini"))  # no alembic.ini needed at runtime


def test_the_head_read_from_the_files_is_alembics() -> None:
    # upgrade() skips Alembic for a database already at packaged_head(): it must be the head.
    assert packaged_head() == head_revision()


def test_a_database_one_revision_behind_is_migrated_when_a_store_opens(
    empty_db_url: str | URL, tmp_path: Path
) -> None:
    upgrade(empty_db_url)
    command.downgrade(_config_on(empty_db_url), "-1")
    assert current_revision(empty_db_url) not in (None, head_revision())
    with CoordinatorStore(empty_db_url, tmp_path / "a"):
        pass
    assert current_revision(empty_db_url) == head_revision()
    assert _diffs(empty_db_url) == []


def test_a_database_from_a_newer_fedcare_is_still_refused(empty_db_url: str | URL) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="9999"):
        upgrade(empty_db_url)


def _task_columns(url: str | URL) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("tasks")}
    finally:
        engine.dispose()


def test_migration_0008_adds_the_closed_and_late_times_of_tasks_and_goes_back(
    empty_db_url: str | URL,
) -> None:
    upgrade(empty_db_url, "0007")
    assert not {"closed_at", "late_at"} & _task_columns(empty_db_url)
    upgrade(empty_db_url, "0008")
    assert current_revision(empty_db_url) == "0008"
    assert {"closed_at", "late_at"} <= _task_columns(empty_db_url)
    command.downgrade(_config_on(empty_db_url), "0007")
    assert current_revision(empty_db_url) == "0007"
    assert not {"closed_at", "late_at"} & _task_columns(empty_db_url)
    assert "deadline" in _task_columns(empty_db_url)


def test_migration_0009_adds_the_submission_of_tasks_and_goes_back(
    empty_db_url: str | URL,
) -> None:
    upgrade(empty_db_url, "0008")
    assert "submission" not in _task_columns(empty_db_url)
    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == "0009"
    assert "submission" in _task_columns(empty_db_url)
    command.downgrade(_config_on(empty_db_url), "0008")
    assert "submission" not in _task_columns(empty_db_url)
    assert {"closed_at", "late_at"} <= _task_columns(empty_db_url)
