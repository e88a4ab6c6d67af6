"""Where a server keeps its state and how it is tuned: one frozen value, built once.

``otaguard server run`` passes its options to worker processes through environment
variables (:data:`ENV_DATA_DIR`, :data:`ENV_DATABASE`), because uvicorn's multiprocess
mode imports the application by name in each worker
(:func:`otaguard.server.app.create_app_from_env`).
Every cap and interval the server applies lives here, as python-tuf keeps its
``UpdaterConfig``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib import parse

from otaguard.errors import UsageError

ENV_DATA_DIR = "OTAGUARD_SERVER_DATA_DIR"
ENV_DATABASE = "OTAGUARD_SERVER_DATABASE"
ENV_PUBLIC_URL = "OTAGUARD_SERVER_REPO_URL"
ENV_AUDIT_KEY = "OTAGUARD_SERVER_AUDIT_KEY"
ENV_AUDIT_ORIGIN = "OTAGUARD_SERVER_AUDIT_ORIGIN"
ENV_MQTT = "OTAGUARD_MQTT"
#: the server's password at the broker (with ``mqtt://USER@host``): an environment
#: variable, never an option (a command line is visible to every user of the machine)
ENV_MQTT_PASSWORD = "OTAGUARD_MQTT_PASSWORD"  # noqa: S105 - the variable's name

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may carry (hostile or mistaken clients)."""

    device_body: int = 64 * 1024
    operator_body: int = 16 * MiB
    max_events: int = 100
    max_ecus: int = 64
    artifact: int = 4 * 1024 * MiB
    max_roots_per_upload: int = 1024
    max_roles_per_upload: int = 20_000
    page: int = 1000
    #: audit entries per answer (entries, searches), and entries per submitted local log
    audit_page: int = 1000
    audit_submission: int = 50_000


@dataclass(frozen=True)
class Timing:
    """Intervals of the server's own work (seconds)."""

    poll_interval: int = 900
    last_seen_flush: float = 5.0
    lease_ttl: float = 10.0
    lease_renew: float = 3.0
    #: the timestamp is re-signed when less than this is left before it expires
    timestamp_margin: int = 6 * 3600
    job_interval: float = 2.0
    director_expiry: int = 86_400
    nonce_retention: int = 900
    #: the audit log's checkpoint is signed again when it is this old and entries were added
    audit_checkpoint: float = 30.0
    #: how long a process's check-ins trust its list of running campaigns (a start, an
    #: advance or a halt by another process reaches them within this)
    campaign_cache: float = 2.0
    #: how long an idle HTTP connection is kept open. Longer than any client keeps one in its
    #: pool (httpx: 5 s), so that the client always closes first: with equal timers, a request
    #: sent on a connection the server is closing at that instant fails with a read error.
    #: Behind a load balancer, keep it above the balancer's idle timeout for the same reason.
    keep_alive: float = 75.0


@dataclass(frozen=True)
class ServerConfig:
    """A server's data directory, database and tuning."""

    data_dir: Path
    database_url: str
    #: where devices fetch repository files (a mirror or CDN may serve them); None: this server
    repo_url: str | None = None
    #: the audit key: a key file or a pkcs11: URI; None: DATA_DIR/online-keys/audit.pem
    audit_key: str | None = None
    #: the audit log's name (its checkpoints' origin), fixed at the first start
    audit_origin: str | None = None
    #: the MQTT broker devices are told to listen to (push); None: polling only
    mqtt_url: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    limits: Limits = Limits()
    timing: Timing = Timing()

    def __post_init__(self) -> None:
        if self.mqtt_url is not None:
            split = parse.urlsplit(self.mqtt_url)
            if split.scheme not in ("mqtt", "tcp") or not split.hostname:
                raise UsageError(  # not the URL itself: it may hold a password
                    f"--mqtt: not an mqtt://[USER@]host:port URL (scheme {split.scheme!r})"
                )

    @property
    def online_keys_dir(self) -> Path:
        return self.data_dir / "online-keys"

    @property
    def repo_dir(self) -> Path:
        return self.data_dir / "repo"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts" / "sha256"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def director_root_file(self) -> Path:
        return self.data_dir / "director-root.json"

    @property
    def audit_public_file(self) -> Path:
        return self.data_dir / "audit.pub"

    @classmethod
    def create(
        cls, data_dir: str | os.PathLike[str], database_url: str | None = None, **kw: object
    ) -> ServerConfig:
        base = Path(data_dir).absolute()
        return cls(base, database_url or sqlite_url(base), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        data_dir = env.get(ENV_DATA_DIR)
        if not data_dir:
            raise UsageError(
                f"{ENV_DATA_DIR} is not set (start the server with otaguard server run)"
            )
        return cls.create(
            data_dir,
            env.get(ENV_DATABASE) or None,
            repo_url=env.get(ENV_PUBLIC_URL),
            audit_key=env.get(ENV_AUDIT_KEY) or None,
            audit_origin=env.get(ENV_AUDIT_ORIGIN) or None,
            mqtt_url=env.get(ENV_MQTT) or None,
            mqtt_password=env.get(ENV_MQTT_PASSWORD),
        )

    def to_env(self) -> dict[str, str]:
        env = {ENV_DATA_DIR: str(self.data_dir), ENV_DATABASE: self.database_url}
        for name, value in (
            (ENV_PUBLIC_URL, self.repo_url),
            (ENV_AUDIT_KEY, self.audit_key),
            (ENV_AUDIT_ORIGIN, self.audit_origin),
            (ENV_MQTT, self.mqtt_url),
            (ENV_MQTT_PASSWORD, self.mqtt_password),
        ):
            if value:
                env[name] = value
        return env


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: ``DATA_DIR/server.db``."""
    return f"sqlite+pysqlite:///{data_dir / 'server.db'}"
