"""A server's data directory: made on first start, upgraded on later ones.

::

    DATA_DIR/
      server.db              the embedded database (unless --database names another)
      admin.token            the first admin token (0600), written when the database has none
      director-root.json     the director's TUF root: what vehicles are provisioned with
      online-keys/           snapshot, timestamp, director: <role>.pem (0600) and <role>.pub
      repo/                  the published image repository (metadata/, targets/)
      artifacts/sha256/<hex> uploaded images

Initialisation holds an exclusive lock on ``DATA_DIR/.lock`` (``repo.repository.locked``), so server
processes started together on one data dir make one set of keys and one token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from otaguard._atomic import write_atomic
from otaguard.errors import StorageError
from otaguard.repo.repository import locked
from otaguard.server import keys as online_keys
from otaguard.server import migrate
from otaguard.server.auth import Role, new_token
from otaguard.server.config import ServerConfig
from otaguard.server.db import Database
from otaguard.server.services.tokens import Tokens


@dataclass
class InitReport:
    """What a start did to the data dir and the database."""

    created: list[Path] = field(default_factory=list)
    schema_before: str | None = None
    schema_after: str = ""

    @property
    def initialised(self) -> bool:
        return self.schema_before is None

    def lines(self) -> list[str]:
        out = []
        if self.schema_before is None:
            out.append(f"database schema created (revision {self.schema_after})")
        elif self.schema_before != self.schema_after:
            out.append(f"database schema upgraded {self.schema_before} -> {self.schema_after}")
        out += [f"wrote {path}" for path in self.created]
        return out


def prepare(config: ServerConfig, db: Database, *, now: dt.datetime) -> InitReport:
    """Make what is missing (keys, director root, admin token) and upgrade the schema."""
    report = InitReport()
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot use {config.data_dir}: {exc.strerror or exc}") from exc
    with locked(config.data_dir):
        report.schema_before, report.schema_after = migrate.upgrade(db)
        report.created += online_keys.generate(config.online_keys_dir)
        keys = online_keys.load(config.online_keys_dir)
        if not config.director_root_file.exists():
            online_keys.write_director_root(config.director_root_file, keys, now=now)
            report.created.append(config.director_root_file)
        for directory in (config.artifacts_dir, config.repo_dir):
            directory.mkdir(parents=True, exist_ok=True)
        tokens = Tokens(db)
        if not tokens.has_admin():
            # the file first: a crash before the commit leaves a token that the next start replaces
            secret = new_token()
            write_atomic(config.admin_token_file, (secret + "\n").encode(), mode=0o600)
            tokens.create(Role.ADMIN, "admin", now=int(now.timestamp()), token=secret)
            report.created.append(config.admin_token_file)
    return report
