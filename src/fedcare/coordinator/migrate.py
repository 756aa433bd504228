"""Bring the coordinator's database to the current schema with Alembic, from Python.

No ``alembic.ini`` is needed: :func:`alembic_config` points Alembic at the environment shipped
inside the package (``fedcare/coordinator/migrations``). :func:`upgrade` runs every missing
revision in one transaction; on PostgreSQL it first takes an advisory lock, so two coordinators
starting at once do not migrate the same database twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from fedcare.coordinator.engine import WRITE_OPTION, make_engine
from fedcare.errors import StoreError

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x66656463  # "fedc": the advisory lock held while migrating on PostgreSQL


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for the packaged environment (``url`` for offline ``--sql`` runs)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision this version of fedcare knows."""
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
    with _engine(target) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


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
