"""Everything one server process holds: configuration, database, online keys, caches.

One :class:`ServerContext` per process, made by the application's lifespan and
reached by routers as ``request.app.state.server``. Nothing in it is the truth
about the fleet: that is the database (and the data dir), so any number of
processes can serve side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from otaguard.server import keys as online_keys
from otaguard.server.config import ServerConfig
from otaguard.server.db import Database
from otaguard.server.services.tokens import Tokens


@dataclass
class ServerContext:
    config: ServerConfig
    db: Database
    keys: online_keys.OnlineKeys
    clock: Callable[[], float] = time.time
    tokens: Tokens = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = Tokens(self.db)

    def now(self) -> int:
        return int(self.clock())

    @classmethod
    def open(cls, config: ServerConfig) -> ServerContext:
        db = Database(config.database_url)
        return cls(config, db, online_keys.load(config.online_keys_dir))

    def close(self) -> None:
        self.db.dispose()
