"""The idle check-in's hot path on PostgreSQL: one round trip, no connection churn, no write.

Measured in bench/bench_server.py; these tests pin down what the figures rest on, at
the wire: libpq's own protocol trace (``PQtrace``) of the connections the server uses
shows every message psycopg sends, so a BEGIN, a ROLLBACK or a ping cannot hide.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import event, select, text

from otaguard.server.client import FleetClient
from otaguard.server.db import Database
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_server import LiveServer, pg_connect, start_live


@pytest.fixture
def pg_live(pg_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live(tmp_path / "srv", pg_url)
    try:
        yield server
    finally:
        server.stop()


class WireTrace:
    """libpq's trace of every connection an engine hands out while it is installed."""

    def __init__(self, engine: Any, path: Path) -> None:
        self.engine = engine
        self.path = path
        self.connections: set[int] = set()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> WireTrace:
        self.file = self._stack.enter_context(self.path.open("w+b"))
        event.listen(self.engine, "checkout", self._checkout)
        event.listen(self.engine, "checkin", self._checkin)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "checkout", self._checkout)
        event.remove(self.engine, "checkin", self._checkin)
        self._stack.close()

    def _checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        self.connections.add(id(dbapi_conn))
        dbapi_conn.pgconn.trace(self.file.fileno())
        dbapi_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def _checkin(self, dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            dbapi_conn.pgconn.untrace()

    def text(self) -> str:
        return self.path.read_text(errors="replace")


def _idle_device(live: LiveServer) -> tuple[Device, str]:
    ca = DeviceCa.make()
    fleet = FleetClient(live.url, live.admin_token)
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    fleet.close()
    device = Device(live.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    assert device.post_state([ecu_state()]).status_code == 200
    etag = device.check_in().headers["ETag"]
    return device, etag


def test_an_idle_check_in_reads_the_device_in_one_round_trip(
    pg_live: LiveServer, tmp_path: Path
) -> None:
    device, etag = _idle_device(pg_live)
    db: Database = pg_live.app_state.server.db
    checkins = 8  # past psycopg's prepare threshold (5): prepared statements show too
    with WireTrace(db._lookup_engine, tmp_path / "trace") as trace:
        for _ in range(checkins):
            assert device.check_in(etag).status_code == 304
    wire = trace.text()
    round_trips = wire.count("\tReadyForQuery\t")
    # one round trip per check-in, plus one per connection the first time psycopg
    # prepares the statement (a Parse of its own)
    assert checkins <= round_trips <= checkins + len(trace.connections)
    # no transaction (BEGIN/ROLLBACK), no ping: no simple query at all, only the lookup
    assert re.findall(r"^F\t\d+\tQuery\t", wire, re.MULTILINE) == []
    statements = set(re.findall(r'^F\t\d+\tParse\t "[^"]*" "([^"]*)"', wire, re.MULTILINE))
    assert len(statements) == 1
    (statement,) = statements
    assert statement.startswith("SELECT devices.id, devices.public_key_der")
    assert "chain_pem" not in statement  # the certificate chain stays in the database


def test_a_lookup_survives_a_connection_the_server_dropped(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    try:
        query = select(text("pg_backend_pid()"))
        first = db.lookup(query, {})
        assert first is not None
        with pg_connect(
            pg_url.split("?", maxsplit=1)[0]
        ) as admin:  # what a PostgreSQL restart does
            admin.execute("SELECT pg_terminate_backend(%s)", (first[0],))
        again = db.lookup(query, {})
        assert again is not None and again[0] != first[0]
    finally:
        db.dispose()


def test_a_failing_lookup_is_not_retried(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    checkouts: list[int] = []
    event.listen(db._lookup_engine, "checkout", lambda *_: checkouts.append(1))
    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            db.lookup(select(text("*")).select_from(text("no_such_table")), {})
        assert len(checkouts) == 1
        # the connection survives a statement error (no transaction was aborted)
        assert db.lookup(select(text("1")), {}) == (1,)
    finally:
        db.dispose()


@pytest.mark.parametrize("which", ["lookup", "session"])
def test_concurrent_readers_wait_for_a_connection_instead_of_opening_more(
    pg_url: str, which: str
) -> None:
    """An overflowing pool opened and closed a PostgreSQL backend per request under load."""
    size = 3
    db = Database(pg_url, pool_size=size)
    engine = db._lookup_engine if which == "lookup" else db.engine
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    query = select(text("pg_sleep(0.01)"))

    def read() -> None:
        for _ in range(5):
            if which == "lookup":
                db.lookup(query, {})
            else:
                with db.reading() as session:
                    session.execute(query)

    try:
        threads = [threading.Thread(target=read) for _ in range(4 * size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 1 <= len(opened) <= size
    finally:
        db.dispose()


def test_check_ins_read_the_repository_versions_inline_while_cached(pg_live: LiveServer) -> None:
    """No thread hand-off for the versions while this process's copy is fresh."""
    store = pg_live.app_state.server.repo
    store.forget()
    assert store.cached_versions() == (False, None)
    versions = store.versions()  # read from the database (None: nothing published)
    assert store.cached_versions() == (True, versions)
