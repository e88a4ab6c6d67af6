"""Reading the audit log out of the database: tiles, entries, proofs.

The stored rows are served in the C2SP tlog-tiles layout as they are (never
recomputed from the entries): level-0 hash tiles from ``audit_entries.leaf``,
upper tiles from ``audit_nodes``, entry bundles from ``audit_entries.data``. So an
entry edited in the database is served edited next to the leaf hash it had when it
was appended, and the verifier names it; a log rebuilt from edited entries would
instead have verified against a freshly signed root.

A tile of width W exists once the log has the W hashes it holds; being append-only,
its bytes never change after that (a full tile is served ``immutable``).
:class:`DbLogReader` is a :data:`~otaguard.audit.tiles.LogReader`, so the pure
proof and verification code reads the database exactly as it reads a directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from otaguard.audit.checkpoint import Checkpoint, parse_checkpoint
from otaguard.audit.note import parse_note
from otaguard.audit.proofs import (
    ConsistencyProof,
    InclusionProof,
    prove_consistency,
    prove_inclusion,
)
from otaguard.audit.tiles import (
    CHECKPOINT,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileHashSource,
    encode_bundle,
    parse_tile_path,
)
from otaguard.server.models import AuditCheckpoint, AuditEntryRow, AuditNode
from otaguard.server.services.audit import subject_key


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    note: bytes
    created_at: int


def latest_checkpoint(session: Session) -> StoredCheckpoint | None:
    row = session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
    ).first()
    return None if row is None else _stored(row)


def checkpoint_of_size(session: Session, size: int) -> StoredCheckpoint | None:
    row = session.get(AuditCheckpoint, size)
    return None if row is None else _stored(row)


def _stored(row: AuditCheckpoint) -> StoredCheckpoint:
    return StoredCheckpoint(parse_checkpoint(parse_note(row.note).text), row.note, row.created_at)


class DbLogReader:
    """A ``read(path) -> bytes`` over the database's rows (FileNotFoundError: not there yet)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, path: str) -> bytes:
        if path == CHECKPOINT:
            latest = latest_checkpoint(self.session)
            if latest is None:
                raise FileNotFoundError(path)
            return latest.note
        try:
            tile = parse_tile_path(path)
        except ValueError:
            raise FileNotFoundError(path) from None
        first = tile.index * TILE_WIDTH
        last = first + tile.width
        if tile.level is None:
            data = list(
                self.session.scalars(
                    select(AuditEntryRow.data)
                    .where(AuditEntryRow.idx >= first, AuditEntryRow.idx < last)
                    .order_by(AuditEntryRow.idx)
                )
            )
            if len(data) != tile.width:
                raise FileNotFoundError(path)
            return encode_bundle(data)
        if tile.level == 0:
            hashes = list(
                self.session.scalars(
                    select(AuditEntryRow.leaf)
                    .where(AuditEntryRow.idx >= first, AuditEntryRow.idx < last)
                    .order_by(AuditEntryRow.idx)
                )
            )
        else:
            hashes = list(
                self.session.scalars(
                    select(AuditNode.hash)
                    .where(
                        AuditNode.level == tile.level * TILE_HEIGHT,
                        AuditNode.idx >= first,
                        AuditNode.idx < last,
                    )
                    .order_by(AuditNode.idx)
                )
            )
        if len(hashes) != tile.width:
            raise FileNotFoundError(path)
        return b"".join(hashes)


def source(session: Session, size: int) -> TileHashSource:
    """The stored hashes of the tree of ``size`` entries, for proofs and roots."""
    return TileHashSource(DbLogReader(session), size)


@dataclass(frozen=True)
class EntryRow:
    index: int
    data: bytes


def entries(session: Session, start: int, end: int) -> list[EntryRow]:
    rows = session.execute(
        select(AuditEntryRow.idx, AuditEntryRow.data)
        .where(AuditEntryRow.idx >= start, AuditEntryRow.idx < end)
        .order_by(AuditEntryRow.idx)
    )
    return [EntryRow(i, d) for i, d in rows]


def find(
    session: Session,
    *,
    subject: str | None = None,
    target: str | None = None,
    actions: Sequence[str] = (),
    below: int,
    after: int = -1,
    limit: int,
) -> list[EntryRow]:
    """Entries by subject, target and/or action, in log order, below index ``below``."""
    query = select(AuditEntryRow.idx, AuditEntryRow.data).where(
        AuditEntryRow.idx > after, AuditEntryRow.idx < below
    )
    if subject is not None:
        query = query.where(AuditEntryRow.subject_sha256 == subject_key(subject))
    if target is not None:
        query = query.where(AuditEntryRow.target == target)
    if actions:
        query = query.where(AuditEntryRow.action.in_(list(actions)))
    rows = session.execute(query.order_by(AuditEntryRow.idx).limit(limit))
    return [EntryRow(i, d) for i, d in rows]


def inclusion(session: Session, checkpoint: Checkpoint, index: int) -> InclusionProof:
    """Entry ``index`` and its proof against ``checkpoint``, checked before it is returned."""
    return prove_inclusion(DbLogReader(session), checkpoint, index)


def consistency(session: Session, checkpoint: Checkpoint, old_size: int) -> ConsistencyProof:
    """The proof that ``checkpoint``'s tree extends its first ``old_size`` entries (checked)."""
    return prove_consistency(DbLogReader(session), checkpoint, old_size)
