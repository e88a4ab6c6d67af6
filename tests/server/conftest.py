"""Server fixtures: databases (SQLite and PostgreSQL, every test on both) and a live server.

``db_url`` is parametrised over both engines. PostgreSQL is the one at
127.0.0.1:5432 (trust auth); each pytest process creates its own database with a
unique name and drops it at the end, and each test gets a schema of its own in it.
If PostgreSQL is down the fixture FAILS (``make test`` and ``.ci/run`` start it).

``live`` is a real uvicorn serving the real application on an ephemeral loopback
port, in a thread of the test process; tests talk to it with httpx.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.helpers_process import ServerProcess
from server.helpers_server import PG_ADMIN_URL, LiveServer, pg_connect, start_live


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this pytest process: its URL."""
    name = f"otaguard_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = pg_connect(PG_ADMIN_URL)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with pg_connect(PG_ADMIN_URL) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with nothing in it, on each engine."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'server.db'}"
        return
    yield from _schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A PostgreSQL URL with nothing in it (for what only PostgreSQL can do: several hosts)."""
    yield from _schema(pg_database)


def _schema(base: str) -> Iterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    with pg_connect(base) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{base}?options=-csearch_path%3D{schema}"
    with pg_connect(base) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A running server on an initialised data dir."""
    server = start_live(tmp_path / "srv", db_url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    """Server processes a test starts (``ServerProcess.start``), stopped after it."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()
