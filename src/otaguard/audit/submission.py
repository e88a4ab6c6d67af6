"""Carrying a local log (an offline ceremony's evidence) into another log.

A local log is submitted whole: its signed checkpoint, the key that signs it, and
every entry in order. :func:`verify_submission` checks it as ``audit verify``
would (the checkpoint is signed by that key under its own origin; each entry parses
and sits at its own index; the entries hash to the signed root) and returns, for
each entry, the inclusion path that proves it is in the ceremony's log. The
receiving log records each entry with the ceremony's origin, index, signed
checkpoint and that path, so anyone holding the ceremony's key can check, from
the receiving log alone, that the entry is the ceremony's own
(:func:`verify_carried`).

Resubmitting a grown local log carries only the new entries; the receiver keeps
the size and root it has seen and refuses a history that does not extend it
(:func:`check_extends`): the ceremony's log cannot be forked unnoticed either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otaguard.audit.checkpoint import Checkpoint, open_checkpoint
from otaguard.audit.entry import AuditEntry, parse_entry
from otaguard.audit.merkle import (
    CompactRange,
    fold_right,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_nodes,
    verify_inclusion,
)
from otaguard.audit.note import VerifierKey, b64decode_strict, b64encode
from otaguard.crypto.keys import PublicKey
from otaguard.errors import AuditConsistencyError, AuditEntryError, AuditTreeError


class MemoryHashSource:
    """Every complete subtree of a tree held in memory (for a log of modest size)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int) -> bytes:
        return fold_right([self.node(lvl, idx) for lvl, idx in range_nodes(0, size)])


@dataclass(frozen=True)
class Carried:
    """One entry of the submitted log, with its proof against the submitted checkpoint."""

    entry: AuditEntry
    raw: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True)
class VerifiedSubmission:
    checkpoint: Checkpoint
    note: bytes
    key: VerifierKey
    entries: list[Carried]
    source: MemoryHashSource


def verify_submission(
    note: bytes, key: VerifierKey | PublicKey, entries: Sequence[bytes]
) -> VerifiedSubmission:
    """The whole local log, checked against its own signed checkpoint and key."""
    checkpoint = open_checkpoint(note, [key])
    named = (
        key if isinstance(key, VerifierKey) else VerifierKey.for_public_key(checkpoint.origin, key)
    )
    if len(entries) != checkpoint.size:
        raise AuditTreeError(
            f"{len(entries)} entries submitted, the checkpoint of {checkpoint.origin!r} "
            f"has {checkpoint.size}"
        )
    parsed = []
    for position, raw in enumerate(entries):
        try:
            entry = parse_entry(raw)
        except AuditEntryError as exc:
            raise AuditEntryError(f"entry {position}: {exc}", index=position) from None
        if entry.index != position:
            raise AuditEntryError(f"position {position} holds entry {entry.index}", index=position)
        parsed.append(entry)
    leaves = [leaf_hash(raw) for raw in entries]
    source = MemoryHashSource(leaves)
    if (source.root(len(leaves)) if leaves else CompactRange.empty().root()) != checkpoint.root:
        raise AuditTreeError(f"the entries do not hash to the signed root of {checkpoint.origin!r}")
    carried = [
        Carried(entry, raw, tuple(inclusion_proof(source, entry.index, checkpoint.size)))
        for entry, raw in zip(parsed, entries, strict=True)
    ]
    return VerifiedSubmission(checkpoint, note, named, carried, source)


def check_extends(submission: VerifiedSubmission, size: int, root: bytes) -> None:
    """Refuse a log that does not extend the ``size`` entries with ``root`` seen before."""
    checkpoint = submission.checkpoint
    if size > checkpoint.size:
        raise AuditConsistencyError(
            f"{checkpoint.origin!r} had {size} entries when submitted before, now "
            f"{checkpoint.size}: entries were deleted"
        )
    if size and submission.source.root(size) != root:
        raise AuditConsistencyError(
            f"the first {size} entries of {checkpoint.origin!r} are not the ones submitted "
            f"before: its history was rewritten (a fork)"
        )


def carried_details(submission: VerifiedSubmission, item: Carried) -> dict[str, Any]:
    """What the receiving log's ``audit.submit`` entry holds of a carried entry."""
    return {
        "origin": submission.checkpoint.origin,
        "index": item.entry.index,
        "tree_size": submission.checkpoint.size,
        "checkpoint": submission.note.decode("utf-8"),
        "verifier_key": submission.key.encode(),
        "entry": item.raw.decode("utf-8"),
        "inclusion_path": [b64encode(h) for h in item.path],
    }


def verify_carried(
    details: Mapping[str, Any], keys: Sequence[VerifierKey | PublicKey]
) -> AuditEntry:
    """Check an ``audit.submit`` entry's details against the ceremony's trusted key:
    its checkpoint's signature, and the carried entry's inclusion in it."""
    try:
        note = str(details["checkpoint"]).encode("utf-8")
        raw = str(details["entry"]).encode("utf-8")
        index = details["index"]
        path = [b64decode_strict(str(h)) for h in details["inclusion_path"]]
    except (KeyError, TypeError, ValueError):
        raise AuditEntryError("not the details of a carried entry") from None
    checkpoint = open_checkpoint(note, keys)
    if not isinstance(index, int):
        raise AuditEntryError("the carried entry's index is not an integer")
    verify_inclusion(leaf_hash(raw), index, checkpoint.size, path, checkpoint.root)
    entry = parse_entry(raw)
    if entry.index != index:
        raise AuditEntryError(f"the carried entry claims index {entry.index}, not {index}")
    return entry
