"""Fixtures: every store test runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL comes from ``FEDCARE_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``test``). Each test run works in its own randomly named schema
(store tests share one, emptied before each test; migration tests get a fresh empty one), all
dropped afterwards, so concurrent runs never collide. Without a server the PostgreSQL cases
skip, saying why. Test connections turn off ``synchronous_commit`` (speed only).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, make_url, text

from fedcare.coordinator import CoordinatorStore, upgrade
from fedcare.coordinator.db import metadata

from .helpers import FakeClock

PG_URL = os.environ.get(
    "FEDCARE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine | str]:
    """An autocommit engine on the PostgreSQL server, or the reason it is unreachable."""
    engine = create_engine(
        PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        engine.dispose()
        where = make_url(PG_URL).render_as_string(hide_password=True)
        yield f"PostgreSQL not reachable at {where} ({type(err).__name__}: {err})".splitlines()[0]
        return
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_schemas(pg_admin: Engine | str) -> Iterator[Callable[[], URL]]:
    """Makes fresh, empty schemas (URLs whose connections see only that schema)."""
    if isinstance(pg_admin, str):
        pytest.skip(pg_admin)
    made: list[str] = []

    def new_schema() -> URL:
        schema = f"fedcare_test_{uuid.uuid4().hex[:12]}"
        with pg_admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        options = f"-csearch_path={schema} -csynchronous_commit=off"
        return make_url(PG_URL).update_query_dict({"options": options})

    yield new_schema
    with pg_admin.connect() as conn:
        for schema in made:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(scope="session")
def pg_store_url(pg_schemas: Callable[[], URL]) -> URL:
    """One migrated schema shared by this run's store tests."""
    url = pg_schemas()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def pg_store_engine(pg_store_url: URL) -> Iterator[Engine]:
    engine = create_engine(pg_store_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | URL:
    """An empty database (no tables) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("pg_schemas")()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | URL:
    """A migrated database with no rows, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: URL = request.getfixturevalue("pg_store_url")
    with request.getfixturevalue("pg_store_engine").begin() as conn:
        for table in reversed(metadata.sorted_tables):  # DELETE beats TRUNCATE on tiny tables
            conn.execute(table.delete())
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(
    db_url: str | URL, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[..., CoordinatorStore]]:
    """Open stores on the test's database (all closed at the end)."""
    opened: list[CoordinatorStore] = []

    def make(**kwargs: Any) -> CoordinatorStore:
        kwargs.setdefault("clock", clock)
        store = CoordinatorStore(db_url, tmp_path / "artifacts", **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., CoordinatorStore]) -> CoordinatorStore:
    return make_store()
