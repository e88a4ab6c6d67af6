"""Leases: one process at a time runs a background job, and another takes over when it dies.

A lease is a row (``leases``: name, holder, expires_at). Its holder renews it
well before it expires; anyone may take it once it has expired, so a holder
killed with SIGKILL is replaced within one lease time. Each decision is one
short transaction (PostgreSQL: the row locked ``FOR UPDATE``; SQLite: the write
lock of ``BEGIN IMMEDIATE``), so two processes never both believe they hold it.
Time is an argument: the caller reads the clock.

A job done under a lease must still be safe to repeat (a holder paused past its
lease may finish a run after another has started one): the jobs here are
(re-signing a timestamp that is about to expire, forgetting old nonces).
"""

from __future__ import annotations

import os
import secrets
import socket

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from otaguard.server.db import Database
from otaguard.server.models import Lease as LeaseRow


def holder_id() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    def __init__(self, db: Database, name: str, holder: str, ttl: float) -> None:
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl = ttl

    def acquire(self, now: float) -> bool:
        """Take or renew the lease; False while another holder's lease runs."""
        try:
            with self.db.writing() as session:
                row = session.scalars(
                    select(LeaseRow).where(LeaseRow.name == self.name).with_for_update()
                ).one_or_none()
                if row is None:
                    session.add(
                        LeaseRow(
                            name=self.name,
                            holder=self.holder,
                            expires_at=now + self.ttl,
                            taken_at=now,
                        )
                    )
                    return True
                if row.holder != self.holder and row.expires_at > now:
                    return False
                if row.holder != self.holder:
                    row.holder = self.holder
                    row.taken_at = now
                row.expires_at = now + self.ttl
                return True
        except IntegrityError:  # another process inserted the row first
            return False

    def release(self) -> None:
        with self.db.writing() as session:
            row = session.scalars(
                select(LeaseRow).where(LeaseRow.name == self.name).with_for_update()
            ).one_or_none()
            if row is not None and row.holder == self.holder:
                row.expires_at = 0.0

    def holder_now(self) -> tuple[str, float] | None:
        with self.db.reading() as session:
            row = session.get(LeaseRow, self.name)
            return None if row is None else (row.holder, row.expires_at)
