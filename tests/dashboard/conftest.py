"""Fixtures of the HTTP API tests: a real coordinator store (SQLite file, or a fresh
PostgreSQL schema), its signed audit trail, and the API served by uvicorn over real TLS with
the coordinator certificate of a real federation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..coordinator.conftest import pg_admin, pg_schemas  # noqa: F401  (fixtures)
from .helpers import Api, start_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API over a SQLite coordinator home."""
    with start_api(tmp_path, None) as running:
        yield running
