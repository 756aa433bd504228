"""One short SQLite transaction on a site's state file (approvals, privacy ledger).

The site agent, its worker and the steward's CLI may touch the same file at once: every call
opens its own connection, takes the write lock up front (``BEGIN IMMEDIATE``, waiting up to 30 s)
and commits or rolls back as one unit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["transaction"]


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection inside one immediate transaction, committed on success."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()
