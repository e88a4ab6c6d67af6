"""Everything one server process holds: configuration, database, online keys, caches.

One :class:`ServerContext` per process, made by the application's lifespan and
reached by routers as ``request.app.state.server``. Nothing in it is the truth
about the fleet: that is the database (and the data dir), so any number of
processes can serve side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from otaguard.crypto.signer import Signer
from otaguard.server import audit_key
from otaguard.server import keys as online_keys
from otaguard.server.config import ServerConfig
from otaguard.server.db import Database
from otaguard.server.lastseen import LastSeen
from otaguard.server.nonces import NonceCache
from otaguard.server.push import Pusher
from otaguard.server.repo_store import RepoStore
from otaguard.server.services import devices
from otaguard.server.services.campaign_notice import Notice, Notify, no_push
from otaguard.server.services.campaign_offer import CampaignCache
from otaguard.server.services.enrollment import RefusalBudget
from otaguard.server.services.tokens import Tokens


@dataclass
class ServerContext:
    config: ServerConfig
    db: Database
    keys: online_keys.OnlineKeys
    clock: Callable[[], float] = time.time
    tokens: Tokens = field(init=False)
    nonces: NonceCache = field(init=False)
    last_seen: LastSeen = field(init=False)
    repo: RepoStore = field(init=False)
    #: how many refused enrolments this process may still record this minute
    enrol_refusals: RefusalBudget = field(init=False)
    #: signs the audit log's checkpoints (``audit_key``: a file key or an HSM key)
    audit_signer: Signer = field(init=False)
    #: publishes "check in now" (``server/push.py``); None without ``--mqtt``
    pusher: Pusher | None = field(init=False)
    #: running campaigns and groups, for the check-in's ETag and offer (a couple of seconds)
    campaigns: CampaignCache = field(init=False)
    #: THE call point for push (``server/push.py``): called after a campaign change commits
    #: (start, advance, halt, pause, resume, cancel, complete). No-op by default: polling alone
    #: is correct; it must never raise into the caller.
    notify: Notify = no_push
    #: the MQTT broker devices are told to subscribe to (the check-in's "push"); None: none
    push_broker: str | None = None

    def __post_init__(self) -> None:
        self.tokens = Tokens(self.db)
        self.nonces = NonceCache()
        self.last_seen = LastSeen(self.db, self.config.timing.last_seen_flush)
        self.repo = RepoStore(self.config.repo_dir, self.db)
        self.enrol_refusals = RefusalBudget()
        self.audit_signer = audit_key.load(self.config)
        self.campaigns = CampaignCache(self.db, self.config.timing.campaign_cache)
        url = self.config.mqtt_url
        self.pusher = Pusher(url, password=self.config.mqtt_password) if url else None
        if self.pusher is not None:  # --mqtt: campaign changes are pushed, devices told where
            self.notify = self.pusher.notify
            self.push_broker = self.pusher.url  # without the server's login

    def notify_all(self, notices: list[Notice]) -> None:
        """Hand committed campaign changes to the push hook; a failing hook is logged only."""
        for notice in notices:
            try:
                self.notify(notice)
            except Exception:
                logging.getLogger("otaguard.server").exception("campaign push failed")

    def now(self) -> int:
        return int(self.clock())

    def device_record(self, device_id: str) -> devices.DeviceRecord | None:
        return devices.lookup(self.db, device_id)

    @classmethod
    def open(cls, config: ServerConfig) -> ServerContext:
        db = Database(config.database_url)
        return cls(config, db, online_keys.load(config.online_keys_dir))

    def start(self) -> None:
        self.last_seen.start()

    def close(self) -> None:
        self.last_seen.stop()
        if self.pusher is not None:
            self.pusher.close()
        self.db.dispose()
        close = getattr(self.audit_signer, "close", None)
        if close is not None:  # an HSM session
            close()
