"""Inclusion and consistency proofs of a tiled log, as values with a JSON form.

Why a module: the CLI (``otaguard audit prove``) and, later, the server's
``/api/v1/audit`` answer with the same objects, and each proof is checked
against the signed root before it is handed out, so a log whose tiles were
damaged cannot emit a proof that would mislead the one who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otaguard.audit.checkpoint import Checkpoint
from otaguard.audit.entry import parse_entry
from otaguard.audit.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from otaguard.audit.note import b64encode
from otaguard.audit.tiles import (
    TILE_WIDTH,
    LogReader,
    TileHashSource,
    entries_path,
    parse_bundle,
    tile_width,
)
from otaguard.errors import AuditEntryError, AuditTruncatedError, UsageError


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 §2.1.3: ``entry`` is leaf ``index`` of the tree of ``size`` with head ``root``."""

    index: int
    size: int
    entry: bytes
    hashes: tuple[bytes, ...]
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.size,
            "entry": self.entry.decode("utf-8"),
            "leaf_hash": b64encode(leaf_hash(self.entry)),
            "inclusion_path": [b64encode(h) for h in self.hashes],
            "root_hash": b64encode(self.root),
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4: the tree of ``new_size`` extends the tree of ``old_size``."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_size_1": self.old_size,
            "tree_size_2": self.new_size,
            "root_hash_1": b64encode(self.old_root),
            "root_hash_2": b64encode(self.new_root),
            "consistency_path": [b64encode(h) for h in self.hashes],
        }


def read_entry(read: LogReader, size: int, index: int) -> bytes:
    """The bytes of entry ``index`` of a log of ``size`` entries (one bundle read)."""
    bundle, offset = divmod(index, TILE_WIDTH)
    path = entries_path(bundle, tile_width(size, 0, bundle))
    try:
        entries = parse_bundle(read(path))
    except FileNotFoundError:
        raise AuditTruncatedError(f"entry bundle {path} is missing", index=index) from None
    if offset >= len(entries):
        raise AuditTruncatedError(f"entry {index} is missing from {path}", index=index)
    data = entries[offset]
    if parse_entry(data).index != index:
        raise AuditEntryError(f"position {index} holds another entry", index=index)
    return data


def prove_inclusion(read: LogReader, checkpoint: Checkpoint, index: int) -> InclusionProof:
    """Entry ``index`` and its proof against ``checkpoint``, checked before returning."""
    if not 0 <= index < checkpoint.size:
        raise UsageError(f"the log has {checkpoint.size} entries: no entry {index}")
    source = TileHashSource(read, checkpoint.size)
    hashes = inclusion_proof(source, index, checkpoint.size)
    entry = read_entry(read, checkpoint.size, index)
    verify_inclusion(leaf_hash(entry), index, checkpoint.size, hashes, checkpoint.root)
    return InclusionProof(index, checkpoint.size, entry, tuple(hashes), checkpoint.root)


def prove_consistency(read: LogReader, checkpoint: Checkpoint, old_size: int) -> ConsistencyProof:
    """The proof that ``checkpoint``'s tree extends its first ``old_size`` entries."""
    if not 0 <= old_size <= checkpoint.size:
        raise UsageError(f"the log has {checkpoint.size} entries: no tree of size {old_size}")
    source = TileHashSource(read, checkpoint.size)
    hashes = consistency_proof(source, old_size, checkpoint.size)
    old_root = root_hash(source, old_size)
    verify_consistency(old_size, checkpoint.size, hashes, old_root, checkpoint.root)
    return ConsistencyProof(old_size, checkpoint.size, old_root, checkpoint.root, tuple(hashes))
