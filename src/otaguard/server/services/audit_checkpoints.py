"""Signing the audit log's checkpoints: periodically (a job under the lease) and on demand.

A checkpoint signs the head the appends maintained (its size and the root of its
right edge). Before signing, the server checks its own database, so that it never
signs a history that is not the one it signed before:

1. the stored hashes (tiles) give the head's root: the head and the tiles agree;
2. the head extends the newest stored checkpoint: an RFC 9162 consistency proof from
   the stored hashes, verified against both roots.

A refusal (``AuditTreeError`` / ``AuditConsistencyError``) means the database was
edited behind the server's back: nothing is signed, and the API answers 409. Every
checkpoint is stored, so a proof can be asked against any checkpoint a client holds.
Signing twice for one size (two processes) is harmless: the first stored one wins.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from otaguard.audit.checkpoint import Checkpoint, sign_checkpoint
from otaguard.audit.merkle import consistency_proof, root_hash, verify_consistency
from otaguard.crypto.signer import Signer
from otaguard.errors import AuditConsistencyError, AuditTreeError
from otaguard.server.db import Database
from otaguard.server.models import AuditCheckpoint, AuditHead
from otaguard.server.services.audit import HEAD_ID, head_tree
from otaguard.server.services.audit_read import (
    StoredCheckpoint,
    checkpoint_of_size,
    latest_checkpoint,
    source,
)


def _checked_head(db: Database) -> tuple[Checkpoint, StoredCheckpoint | None]:
    """Steps 1-2: the head to sign, and the newest checkpoint (None if there is none)."""
    with db.reading() as session:
        head = session.get(AuditHead, HEAD_ID)
        if head is None or head.origin is None:
            raise RuntimeError("the audit log has no head or no name (start the server first)")
        tree = head_tree(head)
        latest = latest_checkpoint(session)
        if latest is not None and latest.checkpoint.size == tree.size:
            if latest.checkpoint.root != tree.root():
                raise AuditConsistencyError(
                    f"the audit log's head ({tree.size} entries) no longer has the root of "
                    f"its checkpoint: the database was edited"
                )
            return latest.checkpoint, latest
        hashes = source(session, tree.size)
        if root_hash(hashes, tree.size) != tree.root():  # 1.
            raise AuditTreeError(
                f"the audit log's stored hashes do not give the root of its head "
                f"({tree.size} entries): the database was edited"
            )
        if latest is not None:  # 2.
            old = latest.checkpoint
            if old.size > tree.size:
                raise AuditConsistencyError(
                    f"the audit log has {tree.size} entries but checkpoint {old.size} was "
                    f"signed: entries were deleted from the database"
                )
            proof = consistency_proof(hashes, old.size, tree.size)
            verify_consistency(old.size, tree.size, proof, old.root, tree.root())
        return Checkpoint(head.origin, tree.size, tree.root()), latest


def sign_head(db: Database, signer: Signer, *, now: int) -> StoredCheckpoint:
    """A checkpoint of the log as it is now (the stored one if nothing was appended since)."""
    checkpoint, latest = _checked_head(db)
    if latest is not None and latest.checkpoint == checkpoint:
        return latest
    note = sign_checkpoint(checkpoint, signer)
    with db.writing() as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(
            insert(AuditCheckpoint)
            .values(size=checkpoint.size, root=checkpoint.root, note=note, created_at=now)
            .on_conflict_do_nothing(index_elements=["size"])
        )
        stored = checkpoint_of_size(session, checkpoint.size)
    assert stored is not None
    return stored


def due(db: Database, *, now: int, interval: float) -> bool:
    """Whether the job should sign: entries were added, and the newest checkpoint is old."""
    with db.reading() as session:
        head = session.get(AuditHead, HEAD_ID)
        newest = session.scalars(
            select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
        ).first()
        if head is None or head.origin is None:
            return False
        if newest is None:
            return True
        return head.size > newest.size and now - newest.created_at >= interval
