"""The database: SQLite embedded (one file in the data dir) or PostgreSQL, behind one API.

Sessions come in two kinds, :meth:`Database.reading` and :meth:`Database.writing`.
On PostgreSQL they are the same (read committed transactions). On SQLite a
writing transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock
before it reads, so two processes that read-then-write wait for each other (the
busy timeout) instead of one failing with "database is locked" when it tries to
upgrade its read lock; readers are never blocked (WAL mode). Foreign keys are
enforced (SQLite leaves them off by default).

:meth:`Database.lookup` is the hot path's read (the device row of every signed
request): one statement, one round trip, no transaction.

Pools never overflow: at a sustained concurrency above the pool size (handlers run
blocking calls on anyio's 40 worker threads) an overflowing pool opens and closes a
PostgreSQL connection -- a new backend process -- per request; a thread that finds
the pool busy waits for a connection instead.

PostgreSQL is reached through psycopg 3 (``postgresql+psycopg://...``); a plain
``postgresql://`` URL is taken to mean it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from otaguard.errors import UsageError

#: How long a SQLite writer waits for another process's write lock (seconds).
SQLITE_BUSY_S = 30


def normalise_url(url: str) -> str:
    """Name the driver we ship (psycopg 3) when the URL leaves it out."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UsageError(f"--database {url[:80]!r} is not a database URL") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite+pysqlite"):
        raise UsageError(
            f"--database: use sqlite:///FILE or postgresql://..., not {parsed.drivername}"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str, begin: str) -> Engine:
    # isolation_level=None: the driver issues no BEGIN of its own; ours below does.
    engine = create_engine(
        url,
        connect_args={
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_S,
            "isolation_level": None,
        },
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class _ConnectionLost(Exception):
    """A pooled PostgreSQL connection turned out dead (the server restarted)."""


class Database:
    """The engines of one server process and its two kinds of session."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url, "BEGIN")
            self._write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
        else:
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True
            )
            self._write_engine = self.engine
        self._lookup_engine = self._lookups(pool_size)
        self._lookup_sql: dict[int, tuple[Select[*tuple[Any, ...]], str]] = {}
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)

    def _lookups(self, pool_size: int) -> Engine:
        """The engine of :meth:`lookup`: autocommit, no ping (PostgreSQL; SQLite: the reader)."""
        if self.url.startswith("sqlite"):
            return self.engine
        return create_engine(
            self.url, pool_size=pool_size, max_overflow=0, isolation_level="AUTOCOMMIT"
        )

    def lookup(
        self, statement: Select[*tuple[Any, ...]], params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of one read-only statement, in one round trip to PostgreSQL.

        For the hot path (a device's row at every signed request): no transaction
        (autocommit: no BEGIN and ROLLBACK round trips), no ping when the connection is
        checked out, and psycopg called on the pool's connection directly (SQLAlchemy's
        result machinery doubled the client's CPU per lookup; the statement is still
        built and compiled by SQLAlchemy, once). A connection that died since
        (PostgreSQL restarted) fails the statement: the pool is emptied, since its other
        connections are as dead, and the read is retried once on a new connection -- it
        changes nothing, so running it twice is harmless. Any other error, or a second
        failure, is raised. SQLite: an ordinary read.
        """
        if self.is_sqlite:
            with self.engine.connect() as conn:
                row = conn.execute(statement, params).first()
            return None if row is None else tuple(row)
        sql = self._compiled(statement)
        try:
            return self._fetch_one(sql, params)
        except _ConnectionLost:
            self._lookup_engine.dispose()
        return self._fetch_one(sql, params)

    def _compiled(self, statement: Select[*tuple[Any, ...]]) -> str:
        known = self._lookup_sql.get(id(statement))
        if known is None or known[0] is not statement:
            known = (statement, str(statement.compile(dialect=self._lookup_engine.dialect)))
            self._lookup_sql[id(statement)] = known
        return known[1]

    def _fetch_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        raw = self._lookup_engine.raw_connection()
        try:
            row: tuple[Any, ...] | None = raw.driver_connection.execute(sql, params).fetchone()  # type: ignore[union-attr]
        except Exception as exc:
            if getattr(raw.driver_connection, "broken", False):
                raw.invalidate(exc)
                raise _ConnectionLost from exc
            raise
        finally:
            raw.close()
        return row

    @property
    def engines(self) -> list[Engine]:
        """Every engine of this process (tests watch them all for writes)."""
        return list(dict.fromkeys([self.engine, self._write_engine, self._lookup_engine]))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        # closing (not rolling back) ends the transaction and keeps loaded rows readable
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction committed when the block ends, rolled back if it raises."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lookup_engine is not self.engine:
            self._lookup_engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()
