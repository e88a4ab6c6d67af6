"""Bring a database's schema to the newest migration (Alembic, run programmatically).

Several server processes may start at once on one database: the upgrade runs
under a lock, so exactly one of them migrates and the others find the schema
current. PostgreSQL: a transaction-scoped advisory lock. SQLite: an exclusive
lock on a file beside the database (SQLite lives on one host).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from otaguard.server.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
#: Any constant: the key of the PostgreSQL advisory lock taken while migrating.
_PG_LOCK_KEY = 0x07A60A4D


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    current = script.get_current_head()
    assert current is not None
    return current


def current(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _file_lock(db: Database) -> Iterator[None]:
    database = db.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade to ``revision``; return (revision before, revision after)."""
    if db.is_sqlite:
        with _file_lock(db), db.engine.connect() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(_config(connection), revision)
            connection.commit()
    else:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                connection.commit()
                before = MigrationContext.configure(connection).get_current_revision()
                command.upgrade(_config(connection), revision)
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                connection.commit()
    return before, current(db) or ""


def downgrade(db: Database, revision: str) -> None:
    """Used by the tests that prove each migration reversible."""
    with db.engine.connect() as connection:
        command.downgrade(_config(connection), revision)
        connection.commit()
