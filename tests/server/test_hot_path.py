"""The idle check-in's hot path on PostgreSQL: no connection churn under load.

Measured in bench/bench_server.py; these tests pin down what the figures rest on.
"""

from __future__ import annotations

import threading

from sqlalchemy import event, text

from otaguard.server.db import Database


def test_concurrent_readers_wait_for_a_connection_instead_of_opening_more(pg_url: str) -> None:
    """An overflowing pool opened and closed a PostgreSQL backend per request under load."""
    size = 3
    db = Database(pg_url, pool_size=size)
    opened: list[int] = []
    event.listen(db.engine, "connect", lambda *_: opened.append(1))
    query = text("SELECT pg_sleep(0.01)")

    def read() -> None:
        for _ in range(5):
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
