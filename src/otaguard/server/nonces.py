"""Replay refusal for read-only device requests, in this process's memory.

State-changing device requests record their nonce in the database, in the same
transaction as the change, under a unique constraint (``services/devices.py``): a
replay is refused by every process. A check-in changes nothing, and writing its
nonce would make every idle check-in a database write; so its nonce is kept here,
for as long as a request signed at that time is accepted (the signature's time
window). Across processes a replayed check-in gets the answer the device already
got (docs/server.md). Bounded: past ``capacity`` entries the oldest are dropped
first; they are the nearest to leaving the window anyway.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from otaguard.protocol.signing import MAX_SKEW_SECONDS

DEFAULT_CAPACITY = 1_000_000


class NonceCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, window: int = 2 * MAX_SKEW_SECONDS):
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity
        self.window = window

    def first_use(self, device_id: str, nonce: str, now: int) -> bool:
        """Record the nonce; False if this device already used it within the window."""
        key = (device_id, nonce)
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            self._seen[key] = now + self.window
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True

    def _expire(self, now: int) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[key]
