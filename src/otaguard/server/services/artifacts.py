"""Uploaded images: streamed to disk, capped, hash checked, then recorded.

An artifact is stored as ``DATA_DIR/artifacts/sha256/<hex>`` only after its bytes
hash to ``<hex>``: the name is the content, so an upload cannot replace another
image. The file is fsynced and renamed into place before the database row is
committed, so an acknowledged upload survives a crash (and a row never names a
missing file). The row's insert is audited (``artifact.upload``) in its transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import Artifact
from otaguard.server.services import audit


@dataclass(frozen=True)
class ArtifactInfo:
    sha256: str
    length: int
    created: bool


def path_of(directory: Path, sha256: str) -> Path:
    return directory / sha256


def lookup(db: Database, sha256: str) -> Artifact | None:
    with db.reading() as session:
        return session.get(Artifact, sha256)


def known(db: Database, digests: list[str]) -> dict[str, int]:
    """sha256 -> length of the artifacts among ``digests`` that are stored."""
    found: dict[str, int] = {}
    with db.reading() as session:
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            for row in session.scalars(select(Artifact).where(Artifact.sha256.in_(chunk))):
                found[row.sha256] = row.length
    return found


async def receive(
    db: Database,
    directory: Path,
    sha256: str,
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    now: int,
    by: Operator,
) -> ArtifactInfo:
    """Store the streamed body as artifact ``sha256`` (422 ``digest`` if it hashes otherwise)."""
    existing = lookup(db, sha256)
    if existing is not None and path_of(directory, sha256).exists():
        async for _ in chunks:
            pass
        return ArtifactInfo(sha256, existing.length, False)
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".upload.", suffix=".tmp", dir=directory)
    tmp = Path(name)
    digest = hashlib.sha256()
    length = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in chunks:
                length += len(chunk)
                if length > limit:
                    raise ApiError(413, "too-large", f"an artifact is at most {limit} bytes")
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if length == 0:
            raise ApiError(422, "truncated", "empty artifact")
        if digest.hexdigest() != sha256:
            raise ApiError(
                422, "digest", f"the body's SHA-256 is {digest.hexdigest()}, not the one named"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path_of(directory, sha256))
        _fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with db.writing() as session:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        inserted = session.execute(
            insert(Artifact)
            .values(sha256=sha256, length=length, created_at=now)
            .on_conflict_do_nothing(index_elements=["sha256"])
            .returning(Artifact.sha256)
        ).first()
        if inserted is not None:
            audit.record(
                session,
                actor=audit.operator(by),
                action="artifact.upload",
                subject=f"sha256:{sha256}",
                details=audit.by_operator(by, {"sha256": sha256, "length": length}),
                now=now,
            )
    return ArtifactInfo(sha256, length, existing is None)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
