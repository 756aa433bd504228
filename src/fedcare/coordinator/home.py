"""A coordinator's home: open an existing one, never create one by mistake.

The coordinator makes its home when it first starts (``fedcare coordinator start --home
HOME``): the folder, the database (``HOME/coordinator.db``, unless ``--db URL`` names another)
migrated to the coordinator's schema, the artifacts and the audit trail. The commands that
read or queue work on a federation from its host (``fedcare study …``, ``sites``, ``models …``,
``analytics --federation``) open it with :func:`open_home`, which refuses a folder that is not
such a home with one line naming the folder and what it lacks, and creates nothing.
"""

from __future__ import annotations

from pathlib import Path

from fedcare.coordinator.engine import default_db_url
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConfigError, NotFoundError

__all__ = ["DB_FILE", "open_home"]

#: The SQLite database in a coordinator's home (see :func:`default_db_url`).
DB_FILE = "coordinator.db"


def open_home(home: Path, db_url: str | None = None) -> CoordinatorStore:
    """The store of the coordinator home ``home`` (its database: ``db_url`` if given).

    Raises
    ------
    ConfigError
        If ``home`` is not a folder, or (without ``db_url``) holds no ``coordinator.db``, or
        the database holds no coordinator schema: each names the folder or database and how to
        make it (start the coordinator there first).
    StoreError
        If the database cannot be reached or read.
    """
    start = f"start the coordinator with `fedcare coordinator start --kit KIT --home {home}"
    start += f" --db {db_url}` first" if db_url else "` first"
    if not home.is_dir():
        what = "the folder does not exist" if not home.exists() else "it is not a folder"
        raise ConfigError(f"{home} is not a coordinator home: {what}; {start}")
    if db_url is None and not (home / DB_FILE).is_file():
        raise ConfigError(
            f"{home} is not a coordinator home: no fedcare database ({DB_FILE}) in it; {start}"
        )
    try:
        return CoordinatorStore(db_url or default_db_url(home), home / "artifacts", create=False)
    except NotFoundError as err:
        where = f"{home} is not a coordinator home: " if db_url is None else ""
        raise ConfigError(f"{where}{err}; {start}") from None
