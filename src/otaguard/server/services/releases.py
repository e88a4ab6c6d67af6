"""Publishing a release: check everything (``release_checks``), then let ``otaguard.repo`` publish.

The server's repository (``DATA_DIR/repo``) is an ordinary ``otaguard repo``
directory whose ``config.json`` names the server's online keys
(``../online-keys/<role>.pem``, resolved by ``repo.bootstrap.online_key_location``).
An accepted upload is written the way ``otaguard repo publish`` writes: new
roots, the images linked into ``targets/``, the changed roles staged, then
``repo.bootstrap.publish_repository`` (which checks the thresholds again, signs
snapshot and timestamp with the configured online keys and writes the timestamp
last: its commit point); the timestamp job is the same call with nothing staged,
as ``bootstrap`` prescribes. One publish at a time, across processes and hosts: a
database lock (PostgreSQL advisory lock; SQLite's write lock) and the
repository's file lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

from otaguard._atomic import write_atomic
from otaguard.errors import RejectedError, UsageError
from otaguard.repo.bootstrap import publish_repository
from otaguard.repo.config import DEFAULT_EXPIRY_DAYS, RepoConfig, save_config
from otaguard.repo.layout import Layout, to_bytes
from otaguard.repo.repository import ImageRepository, locked
from otaguard.server.auth import Operator
from otaguard.server.config import ServerConfig
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.keys import OnlineKeys
from otaguard.server.models import RepositoryState
from otaguard.server.services import artifacts, audit, release_audit, release_checks

_PG_PUBLISH_LOCK = 0x07A60B0B


@dataclass(frozen=True)
class PublishedRelease:
    roots: list[int]
    roles: dict[str, int]
    targets: list[str]
    root_version: int
    snapshot_version: int
    timestamp_version: int


def _now_dt(now: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def ensure_repository(config: ServerConfig) -> Layout:
    """The server's repository directory, its config naming the online keys (made once)."""
    layout = Layout(config.repo_dir)
    if not layout.config_file.exists():
        layout.make_dirs()
        online = os.path.relpath(config.online_keys_dir, config.repo_dir)
        save_config(
            layout.config_file,
            RepoConfig(
                expires=dict(DEFAULT_EXPIRY_DAYS),
                online_keys={role: f"{online}/{role}.pem" for role in ("snapshot", "timestamp")},
            ),
        )
    return layout


@contextlib.contextmanager
def publishing(db: Database, config: ServerConfig) -> Iterator[Session]:
    """One publisher at a time; the session's transaction records the new versions."""
    with db.writing() as session:
        session.connection()  # SQLite: BEGIN IMMEDIATE, the write lock is ours from here
        if not db.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_PUBLISH_LOCK})
        ensure_repository(config)
        with locked(config.repo_dir):
            yield session


def _published_state(repo: ImageRepository) -> release_checks.PublishedState:
    root = repo.published_root()
    roles: dict[str, Metadata[Targets]] = {}
    snapshot = repo.published_snapshot()
    if snapshot is not None:
        for name, meta in snapshot.signed.meta.items():
            role = name.removesuffix(".json")
            roles[role] = repo.layout.load(repo.layout.published_path(role, meta.version), role)
    return release_checks.PublishedState(root, roles)


def _published_root(repo: ImageRepository, version: int) -> Metadata[Root] | None:
    path = repo.layout.published_path(Root.type, version)
    return repo.layout.load(path, Root.type) if path.exists() else None


def _link(source: Path, dest: Path) -> None:
    """Put an image at its consistent-snapshot path (a hard link when the filesystem allows)."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def target_file_path(layout: Layout, info: TargetFile) -> Path:
    directory, sep, base = info.path.rpartition("/")
    return layout.targets / f"{directory}{sep}{info.hashes['sha256']}.{base}"


def record_versions(session: Session, repo: ImageRepository, now: int) -> RepositoryState:
    """Copy the published versions into the database row check-ins read."""
    timestamp = repo.published_timestamp(fresh=True)
    assert timestamp is not None
    row = session.get(RepositoryState, 1)
    if row is None:
        row = RepositoryState(id=1)
        session.add(row)
    row.root_version = repo.published_version(Root.type)
    row.snapshot_version = timestamp.signed.snapshot_meta.version
    row.timestamp_version = timestamp.signed.version
    row.timestamp_expires = int(timestamp.signed.expires.timestamp())
    row.updated_at = now
    return row


def publish_release(
    db: Database,
    config: ServerConfig,
    keys: OnlineKeys,
    *,
    roots: Sequence[bytes],
    roles: Mapping[str, bytes],
    now: int,
    by: Operator,
) -> PublishedRelease:
    """Check and publish an upload (audited: ``release.upload``, ``repo.sign``), or refuse
    it (422, audited in a transaction of its own: ``release.refuse``)."""
    try:
        return _publish(db, config, keys, roots=roots, roles=roles, now=now, by=by)
    except (ApiError, RejectedError, UsageError) as exc:
        if isinstance(exc, ApiError) and exc.status != 422:
            raise
        check = (
            exc.error
            if isinstance(exc, ApiError)
            else exc.check
            if isinstance(exc, RejectedError)
            else "invalid-request"
        )
        details = release_audit.refused(check=check, detail=str(exc), roots=roots, roles=roles)
        with db.writing() as session:
            audit.record(
                session,
                actor=audit.operator(by),
                action="release.refuse",
                subject="repository",
                details=audit.by_operator(by, details),
                now=now,
            )
        raise


def _publish(
    db: Database,
    config: ServerConfig,
    keys: OnlineKeys,
    *,
    roots: Sequence[bytes],
    roles: Mapping[str, bytes],
    now: int,
    by: Operator,
) -> PublishedRelease:
    release_checks.top_level_only(roles)
    when = _now_dt(now)
    with publishing(db, config) as session:
        repo = ImageRepository(config.repo_dir, now=when.replace(microsecond=0))
        for stale in repo.layout.staged_roles():  # a publish cut short by a crash
            repo.layout.staged_path(stale).unlink(missing_ok=True)
        repo = ImageRepository(config.repo_dir, now=when.replace(microsecond=0))
        state = _published_state(repo)
        new_roots, root = release_checks.check_roots(
            roots,
            state.root,
            now=when,
            online_keyids={r: keys.tuf_keyid(r) for r in (Snapshot.type, Timestamp.type)},
            published_root=lambda v: _published_root(repo, v),
        )
        changed, tree = release_checks.check_roles(roles, state, root, now=when)
        published_targets = {
            path: info for md in state.roles.values() for path, info in md.signed.targets.items()
        }
        wanted = sorted(
            {
                info.hashes.get("sha256", "")
                for md in changed.values()
                for info in md.signed.targets.values()
            }
            - {""}
        )
        stored = artifacts.known(db, wanted)
        new_targets = release_checks.check_targets(
            changed,
            published_targets,
            stored=stored,
            open_artifact=lambda h: artifacts.path_of(config.artifacts_dir, h),
        )
        if not new_roots and not changed and state.root is not None:
            row = session.get(RepositoryState, 1)
            if row is not None:
                return PublishedRelease(
                    [], {}, [], row.root_version, row.snapshot_version, row.timestamp_version
                )
        # -- every check passed: write, the timestamp last ---------------------------------
        for info in new_targets:
            _link(
                artifacts.path_of(config.artifacts_dir, info.hashes["sha256"]),
                target_file_path(repo.layout, info),
            )
        for md in new_roots[:-1]:
            path = repo.layout.published_path(Root.type, md.signed.version)
            write_atomic(path, to_bytes(md))
        if new_roots:
            repo.stage(Root.type, new_roots[-1])
        for name, role_md in changed.items():
            repo.stage(name, role_md)
        try:
            result = publish_repository(repo)
        except (RejectedError, UsageError) as exc:
            for staged in repo.layout.staged_roles():
                repo.layout.staged_path(staged).unlink(missing_ok=True)
            check = exc.check if isinstance(exc, RejectedError) else "inconsistent"
            raise ApiError(422, check, str(exc)) from None
        row = record_versions(session, repo, now)
        events = release_audit.published(
            who=audit.operator(by),
            operator_details={"operator_token": by.token_id},
            now=now,
            root=root,
            new_roots=[md.signed.version for md in new_roots],
            changed=changed,
            tree=tree,
            new_targets=new_targets,
            snapshot_version=result.snapshot_version,
            timestamp_version=result.timestamp_version,
            online_keys={r: keys.tuf_keyid(r) for r in (Snapshot.type, Timestamp.type)},
        )
        audit.record_all(session, events)
        return PublishedRelease(
            [md.signed.version for md in new_roots],
            {name: md.signed.version for name, md in changed.items()},
            sorted(info.path for info in new_targets),
            row.root_version,
            result.snapshot_version,
            result.timestamp_version,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def resign_timestamp(db: Database, config: ServerConfig, *, now: int, margin: int) -> int | None:
    """Re-sign the timestamp (and snapshot, past half its life) if it expires within ``margin``.

    Returns the new timestamp version, or None when nothing needed doing.
    """
    with publishing(db, config) as session:
        repo = ImageRepository(config.repo_dir, now=_now_dt(now))
        timestamp = repo.published_timestamp(fresh=True)
        if timestamp is None:
            return None
        if timestamp.signed.expires.timestamp() - now > margin:
            row = session.get(RepositoryState, 1)
            if row is None or row.timestamp_version != timestamp.signed.version:
                # the row lost a race with a crash: the files were published, not recorded
                recorded = record_versions(session, repo, now)
                _record_signing(session, recorded, now, recovered=True)
            return None
        result = publish_repository(repo)
        _record_signing(session, record_versions(session, repo, now), now, recovered=False)
        return result.timestamp_version


def _record_signing(session: Session, row: RepositoryState, now: int, *, recovered: bool) -> None:
    """The server's own signature of snapshot and timestamp (the job): ``repo.sign``."""
    details = {
        "root_version": row.root_version,
        "snapshot_version": row.snapshot_version,
        "timestamp_version": row.timestamp_version,
        "timestamp_expires": row.timestamp_expires,
        "reason": "found published after a crash" if recovered else "re-signed before expiry",
    }
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="repo.sign",
        subject="repository",
        details=details,
        now=now,
    )


def list_targets(repo_dir: Path) -> list[TargetFile]:
    layout = Layout(repo_dir)
    if not layout.config_file.exists():
        return []
    repo = ImageRepository(repo_dir)
    state = _published_state(repo)
    found: dict[str, TargetFile] = {}
    for md in state.roles.values():
        for path, info in md.signed.targets.items():
            found.setdefault(path, info)
    return [found[p] for p in sorted(found)]
