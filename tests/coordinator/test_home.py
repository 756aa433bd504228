"""Opening a coordinator home never creates one: a missing folder, a folder without the
database, a database without the coordinator's schema are refused, naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import URL

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.home import open_home
from fedcare.errors import ConfigError, NotFoundError


def test_open_home_refuses_what_is_not_a_coordinator_home(tmp_path: Path) -> None:
    home = tmp_path / "coord"
    with pytest.raises(ConfigError, match="coord is not a coordinator home: the folder does not"):
        open_home(home)
    home.mkdir()
    with pytest.raises(ConfigError, match=r"no fedcare database \(coordinator.db\) in it"):
        open_home(home)
    (home / "coordinator.db").write_bytes(b"")
    with pytest.raises(ConfigError, match="holds no fedcare coordinator schema"):
        open_home(home)
    assert sorted(p.name for p in home.iterdir()) == ["coordinator.db"]
    (home / "coordinator.db").unlink()
    CoordinatorStore(default_db_url(home), home / "artifacts").close()  # as the coordinator does
    with open_home(home) as store:
        assert store.list_studies() == []


def test_a_store_that_must_exist_creates_nothing(empty_db_url: str | URL, tmp_path: Path) -> None:
    if isinstance(empty_db_url, str):  # SQLite: an empty database file
        Path(empty_db_url.removeprefix("sqlite:///")).touch()
    with pytest.raises(NotFoundError, match="holds no fedcare coordinator schema"):
        CoordinatorStore(empty_db_url, tmp_path / "a", create=False)
    missing = tmp_path / "missing.db"
    with pytest.raises(NotFoundError, match=f"database file {missing} does not exist"):
        CoordinatorStore(f"sqlite:///{missing}", tmp_path / "a", create=False)
    assert not missing.exists()
    CoordinatorStore(empty_db_url, tmp_path / "a").close()  # migrates
    with CoordinatorStore(empty_db_url, tmp_path / "a", create=False) as store:
        assert store.list_sites() == []
