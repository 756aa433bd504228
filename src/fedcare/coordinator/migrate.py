"""Bring the coordinator's database to the current schema with Alembic, from Python.

No ``alembic.ini`` is needed: :func:`alembic_config` points Alembic at the environment shipped
inside the package (``fedcare/coordinator/migrations``). :func:`upgrade` runs every missing
revision in one transaction; on PostgreSQL it first takes an advisory lock, so two coordinators
starting at once do not migrate the same database twice. A database already at the newest
revision (read from the migration files without importing Alembic) is left alone without
loading Alembic, so opening a store for a status command stays quick.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from fedcare.coordinator.engine import WRITE_OPTION, make_engine
from fedcare.errors import NotFoundError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "require_schema",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x66656463  # "fedc": the advisory lock held while migrating on PostgreSQL


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for the packaged environment (``url`` for offline ``--sql`` runs)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision this version of fedcare knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no Alembic revision under {MIGRATIONS_DIR}"
    return head


@contextmanager
def _engine(target: str | URL | Engine) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def _describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def current_revision(target: str | URL | Engine) -> str | None:
    """The revision the database at ``target`` is at; ``None`` for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with _engine(target) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _assigned(node: ast.stmt) -> tuple[str | None, set[str]]:
    """A module-level ``name = ...`` (or ``name: T = ...``): the name and the strings assigned."""
    target: ast.expr
    if isinstance(node, ast.AnnAssign) and node.value is not None:
        target, value = node.target, node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, value = node.targets[0], node.value
    else:
        return None, set()
    if not isinstance(target, ast.Name):
        return None, set()
    try:
        literal = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError):  # not a literal: not a revision line
        return None, set()
    items = literal if isinstance(literal, tuple | list) else (literal,)
    return target.id, {v for v in items if isinstance(v, str)}


def packaged_head() -> str | None:
    """The newest revision, read from the migration files' ``revision`` and ``down_revision``.

    Parses the files (no Alembic import); ``None`` unless they name exactly one head. A test
    checks it agrees with :func:`head_revision`.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            name, values = _assigned(node)
            if name == "revision":
                revisions |= values
            elif name == "down_revision":
                parents |= values
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_packaged_head(engine: Engine) -> bool:
    """Whether the database records exactly the newest revision (``False`` when empty)."""
    head = packaged_head()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:  # no alembic_version table: a new database
        return False
    return list(rows) == [head]


def require_schema(engine: Engine) -> str:
    """The revision the database records; refuse a database fedcare never migrated.

    Plain SQL (no Alembic import), for stores opened with ``create=False``.

    Raises
    ------
    NotFoundError
        If the database has no ``alembic_version`` table or no revision in it.
    StoreError
        If the database cannot be reached or read (not a database, server down).
    """
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                rows: list[str] = []
            else:
                found = conn.execute(text("SELECT version_num FROM alembic_version"))
                rows = list(found.scalars().all())
    except SQLAlchemyError as err:
        first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StoreError(f"database {_describe(engine)} cannot be read: {first}") from err
    if not rows:
        raise NotFoundError(
            f"database {_describe(engine)} holds no fedcare coordinator schema (no migration "
            "applied)"
        )
    return str(rows[0])


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database at ``target`` (a URL or an engine) to ``revision``.

    Parameters
    ----------
    target:
        Database URL, or an engine made by :func:`fedcare.coordinator.engine.make_engine`.
    revision:
        Alembic revision to reach; ``"head"`` (the default) is the newest.

    Raises
    ------
    StoreError
        If the database cannot be reached, is at a revision this fedcare does not know (a
        newer version wrote it), or a migration fails; a failed migration changes nothing.
    """
    with _engine(target) as engine:
        if revision == "head" and _at_packaged_head(engine):
            return  # already at the newest revision: Alembic need not even load
        from alembic import command
        from alembic.util import CommandError

        try:
            with engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
                    cfg = alembic_config()
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
        except (CommandError, SQLAlchemyError) as err:
            raise StoreError(
                f"migrating database {_describe(engine)} to revision {revision!r} failed: {err}"
            ) from err
