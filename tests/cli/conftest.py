"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..dashboard.helpers import Api, start_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The real API over TLS on a SQLite coordinator home, one user per role."""
    with start_api(tmp_path, None) as running:
        yield running
