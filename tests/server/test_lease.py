"""Leases: one holder at a time; another takes over once the holder stops renewing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otaguard.server import migrate
from otaguard.server.db import Database
from otaguard.server.lease import Lease


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def test_one_holder_at_a_time_and_takeover_after_expiry(db: Database) -> None:
    a = Lease(db, "jobs", "a", ttl=10)
    b = Lease(db, "jobs", "b", ttl=10)
    assert a.acquire(100.0)
    assert not b.acquire(101.0)
    assert a.acquire(105.0)  # renewed: runs to 115
    assert not b.acquire(114.0)
    assert b.acquire(115.5)  # a stopped renewing (died): b takes over
    assert not a.acquire(116.0)
    assert b.holder_now() == ("b", 125.5)


def test_release_lets_the_next_holder_in_at_once(db: Database) -> None:
    a = Lease(db, "jobs", "a", ttl=10)
    b = Lease(db, "jobs", "b", ttl=10)
    assert a.acquire(100.0)
    a.release()
    assert b.acquire(100.5)


def test_leases_are_independent(db: Database) -> None:
    assert Lease(db, "jobs", "a", ttl=10).acquire(1.0)
    assert Lease(db, "campaigns", "b", ttl=10).acquire(1.0)
