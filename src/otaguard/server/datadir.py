"""A server's data directory: made on first start, upgraded on later ones.

::

    DATA_DIR/
      server.db              the embedded database (unless --database names another)
      admin.token            the first admin token (0600), written when the database has none
      director-root.json     the director's TUF root: what vehicles are provisioned with
      online-keys/           snapshot, timestamp, director: <role>.pem (0600) and <role>.pub;
                             audit.pem (0600) unless --audit-key names the audit key
      audit.pub              the audit key's public half: what auditors verify the log with
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
from otaguard.audit.note import VerifierKey
from otaguard.crypto.keys import describe_key, key_id
from otaguard.crypto.signer import Signer
from otaguard.errors import StorageError, UsageError
from otaguard.repo.repository import locked
from otaguard.server import audit_key, migrate
from otaguard.server import keys as online_keys
from otaguard.server.auth import Role, new_token
from otaguard.server.config import ServerConfig
from otaguard.server.db import Database
from otaguard.server.services import audit, audit_checkpoints
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
        made = online_keys.generate(config.online_keys_dir)
        audit_files, audit_signer = audit_key.prepare(config)
        report.created += made + audit_files
        keys = online_keys.load(config.online_keys_dir)
        _name_log(db, config, audit_signer, keys, made + audit_files, now=int(now.timestamp()))
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
            tokens.create(Role.ADMIN, "admin", now=int(now.timestamp()), by=None, token=secret)
            report.created.append(config.admin_token_file)
        audit_checkpoints.sign_head(db, audit_signer, now=int(now.timestamp()))
    return report


def _name_log(
    db: Database,
    config: ServerConfig,
    signer: Signer,
    keys: online_keys.OnlineKeys,
    created: list[Path],
    *,
    now: int,
) -> None:
    """Name the audit log (once) and record the keys this start generated."""
    origin = config.audit_origin or audit_key.default_origin(signer.public_key)
    with db.writing() as session:
        named, key = audit.name_log(
            session, origin, VerifierKey.for_public_key(origin, signer.public_key).encode()
        )
        if config.audit_origin is not None and named != config.audit_origin:
            raise UsageError(f"the audit log is named {named!r}: --audit-origin cannot rename it")
        if key != VerifierKey.for_public_key(named, signer.public_key).encode():
            raise UsageError(
                f"the audit log {named!r} is signed by {key}, not by the audit key configured: "
                f"the audit key cannot change under a log"
            )
        for path in created:
            if path.suffix != ".pem":
                continue
            role = path.stem
            public = signer.public_key if role == "audit" else getattr(keys, role).public_key
            details = {
                "role": role,
                "file": str(path.relative_to(config.data_dir)),
                "algorithm": describe_key(public),
            }
            audit.record(
                session,
                actor=audit.SYSTEM,
                action="key.generate",
                subject=key_id(public),
                details=details,
                now=now,
            )
