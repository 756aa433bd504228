"""Fixtures of the deployment tests: an idle coordinator to talk to by hand, PostgreSQL schemas.

PostgreSQL comes from ``FEDCARE_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``test``); each test gets its own throwaway schema, dropped after it.
Without a server the PostgreSQL test skips, saying why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text

from .helpers import provision, running_coordinator
from .wire import ARENA_SITES, Arena, hello

PG_URL = os.environ.get(
    "FEDCARE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="module")
def arena_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    """A real coordinator over mutual TLS with every arena site registered (by its Hello)."""
    root = tmp_path_factory.mktemp("arena")
    kits = provision(root / "federation", ARENA_SITES, name="arena")
    with running_coordinator(kits, root / "home") as coordinator:
        arena = Arena(kits, coordinator)
        for site in ARENA_SITES:
            with arena.client(site) as stub:
                assert hello(stub).site_id == site
        yield arena


@pytest.fixture
def arena(arena_server: Arena) -> Iterator[Arena]:
    """The module's arena; the test's studies are cancelled after it (their tasks expire)."""
    yield arena_server
    arena_server.cancel_studies()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema on the PostgreSQL server."""
    where = make_url(PG_URL).render_as_string(hide_password=True)
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    schema = f"fedcare_deploy_{uuid.uuid4().hex[:12]}"
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            pytest.skip(f"PostgreSQL not reachable at {where} ({reason})")
        options = f"-csearch_path={schema}"
        url = make_url(PG_URL).update_query_dict({"options": options})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
