"""Owner-only coordinator state (fedcare.coordinator.files): 0700 folders, 0600 files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.files import private_dir, private_file, private_sqlite
from fedcare.coordinator.server import default_db_url
from fedcare.coordinator.store import CoordinatorStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask 022, under which plain creation gives 0755 folders and 0644 files."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_private_dir_creates_missing_parents_and_tightens(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "home"
    private_dir(target)
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700] * 3
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_dir(loose)
    assert _mode(loose) == 0o700


def test_private_files_and_sqlite_side_files(tmp_path: Path) -> None:
    db = tmp_path / "home" / "coordinator.db"
    private_file(db)
    assert _mode(db) == 0o600 and _mode(db.parent) == 0o700 and db.read_bytes() == b""
    wal = tmp_path / "home" / "coordinator.db-wal"
    wal.write_bytes(b"x")
    os.chmod(db, 0o644)
    os.chmod(wal, 0o644)
    private_sqlite(str(db))
    assert _mode(db) == 0o600 and _mode(wal) == 0o600


def test_a_store_keeps_database_and_artifacts_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with CoordinatorStore(default_db_url(home), home / "artifacts") as store:
        digest = store.artifacts.put(b"checkpoint bytes")
        study = store.create_study("s", {"name": "s"}, seed=1)
        assert store.get_study(study).name == "s"
        files = [home / "coordinator.db", store.artifacts.path(digest)]
        files += [p for p in home.glob("coordinator.db-*")]
        assert len(files) >= 3  # the WAL is open while the store is
        assert {str(p): _mode(p) for p in files} == {str(p): 0o600 for p in files}
    dirs = [home, home / "artifacts", home / "artifacts" / ".tmp", home / "artifacts" / digest[:2]]
    assert [_mode(d) for d in dirs] == [0o700] * 4


def test_an_existing_artifact_folder_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    (root / ".tmp").mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)
    ArtifactStore(root)
    assert _mode(root) == 0o700 and _mode(root / ".tmp") == 0o700
