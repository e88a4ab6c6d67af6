"""Last-seen times, batched in memory and written every few seconds.

An idle check-in must not write to the database (at 5 M vehicles polling every
15 minutes that would be 5.6 k writes per second for one timestamp). Each process
keeps the newest time per device here and a thread flushes them in one
transaction; a crash loses at most one interval of last-seen times, nothing else.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import bindparam, update

from otaguard.server.db import Database
from otaguard.server.models import Device

log = logging.getLogger("otaguard.server")


class LastSeen:
    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def saw(self, device_id: str, now: int) -> None:
        with self._lock:
            self._pending[device_id] = now

    def pending(self) -> dict[str, int]:
        """Times not written yet (operators' views merge them in)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        statement = (
            update(Device)
            .where(Device.id == bindparam("device"))
            .values(last_seen=bindparam("seen"))
            .execution_options(synchronize_session=False)
        )
        rows = [{"device": device, "seen": seen} for device, seen in sorted(batch.items())]
        try:
            with self.db.writing() as session:
                session.connection().execute(statement, rows)
        except Exception:
            log.exception("last-seen flush failed; kept for the next one")
            with self._lock:
                for device, seen in batch.items():
                    self._pending[device] = max(seen, self._pending.get(device, 0))
            return 0
        return len(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="last-seen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
