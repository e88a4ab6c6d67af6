"""The audit trail: a verifiable append-only log (RFC 9162 Merkle tree, C2SP
signed checkpoints and tiles). Pure formats and verification: no network, no
database; storage comes in through ``read(path)`` / ``write(path, data)`` callables
and the :class:`~otaguard.audit.merkle.HashSource` protocol. See docs/audit.md.
"""

from __future__ import annotations

from otaguard.audit.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from otaguard.audit.entry import (
    ACTIONS,
    ACTOR_KINDS,
    Actor,
    AuditEntry,
    AuditEvent,
    encode_entry,
    parse_entry,
)
from otaguard.audit.local import LocalLog, append_event, write_export
from otaguard.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    HashSource,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from otaguard.audit.note import VerifierKey, open_note, parse_note, sign_note
from otaguard.audit.proofs import (
    ConsistencyProof,
    InclusionProof,
    prove_consistency,
    prove_inclusion,
)
from otaguard.audit.tiles import DirectoryReader, DirectoryWriter, TileAppender, TileHashSource
from otaguard.audit.verify import VerifiedLog, verify_log

__all__ = [
    "ACTIONS",
    "ACTOR_KINDS",
    "EMPTY_ROOT",
    "Actor",
    "AuditEntry",
    "AuditEvent",
    "Checkpoint",
    "CompactRange",
    "ConsistencyProof",
    "DirectoryReader",
    "DirectoryWriter",
    "HashSource",
    "InclusionProof",
    "LocalLog",
    "Node",
    "TileAppender",
    "TileHashSource",
    "VerifiedLog",
    "VerifierKey",
    "append_event",
    "consistency_proof",
    "encode_entry",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_entry",
    "parse_note",
    "prove_consistency",
    "prove_inclusion",
    "root_hash",
    "sign_checkpoint",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "write_export",
]
