"""Owner-only files for the coordinator's state: its home, database and artifacts.

The coordinator's home holds the database (``coordinator.db`` and SQLite's ``-wal``/``-shm``
beside it), the artifacts (model checkpoints, task and reply payloads) and the audit trail;
none of it is for other users of the machine. Folders are created ``0700`` and files ``0600``
whatever the umask, and existing ones are tightened when the coordinator or a store opens
them. (SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file; artifacts
are written through ``mkstemp``, which creates ``0600``; the audit log opens its files
``0600``.) ``kit-path`` names the coordinator's kit (:func:`record_kit`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fedcare.errors import StoreError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "KIT_RECORD",
    "SQLITE_SUFFIXES",
    "private_dir",
    "private_file",
    "private_sqlite",
    "record_kit",
    "recorded_kit",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The files SQLite keeps beside a database in WAL mode.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
#: The file in the coordinator's home naming its kit (written at every start).
KIT_RECORD = "kit-path"


def _tighten(path: Path, mode: int) -> None:
    """Set ``mode`` on ``path`` where allowed (another owner's file is left as it is)."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents ``0700``; tighten ``path`` if it exists.

    Raises
    ------
    StoreError
        If a folder cannot be created.
    """
    missing = []
    here = Path(path)
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
    except OSError as err:
        raise StoreError(f"folder {path} cannot be created: {err}") from err
    _tighten(Path(path), DIR_MODE)
    return Path(path)


def private_file(path: Path) -> Path:
    """Create ``path`` empty ``0600`` if missing (its folder ``0700`` if missing), else tighten
    it to ``0600``.

    Raises
    ------
    StoreError
        If the file cannot be created.
    """
    path = Path(path)
    if not path.parent.exists():
        private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    except OSError as err:
        raise StoreError(f"file {path} cannot be created: {err}") from err
    os.close(fd)
    _tighten(path, FILE_MODE)
    return path


def record_kit(home: Path, kit_dir: Path) -> None:
    """Write ``home/kit-path`` (owner-only): the absolute path of the coordinator's kit, so
    ``fedcare sites`` reads its revocation list (``revoked.json``) without being told."""
    path = private_file(Path(home) / KIT_RECORD)
    path.write_text(f"{Path(kit_dir).resolve()}\n", encoding="utf-8")


def recorded_kit(home: Path) -> Path | None:
    """The coordinator kit recorded in ``home`` by :func:`record_kit`, if any."""
    path = Path(home) / KIT_RECORD
    if not path.is_file():
        return None
    return Path(path.read_text(encoding="utf-8").strip())


def private_sqlite(database: str) -> None:
    """The database file of a SQLite URL, and SQLite's files beside it, owner-only
    (a ``file:`` URI is left to SQLite)."""
    if database.startswith("file:"):
        return
    path = Path(database)
    private_file(path)
    for suffix in SQLITE_SUFFIXES[1:]:
        side = path.with_name(path.name + suffix)
        if side.exists():
            _tighten(side, FILE_MODE)
