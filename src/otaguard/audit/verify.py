"""The offline verifier: is this log exactly what its signed checkpoint says, and
does it extend the history the auditor already holds?

Input: ``read(path) -> bytes`` over a tiles layout (a directory or a URL, see
:mod:`tiles`), the trusted audit keys, and optionally an older signed checkpoint.
Nothing of the log's operator is trusted but the key. Steps, in this order, so
the first refusal names the first bad entry:

1. ``checkpoint`` is a checkpoint signed by a trusted key, under its own origin
   (``audit-checkpoint``, ``audit-signature``).
2. The older checkpoint, if given, is signed too, is of the same log, and is not
   longer than this one (``audit-truncated``: entries deleted at the end).
3. Entry by entry, bundle by bundle: the bundle is there and whole
   (``audit-truncated``); the entry parses (``audit-entry``); its ``index`` is its
   position (``audit-entry``: deleted, inserted or reordered entries name the
   position where the order breaks); its leaf hash is the one in the level-0
   tile (``audit-tree``: an edited entry).
4. Every hash stored in the higher tiles equals the one recomputed from the
   entries (``audit-tree``; names the first entry of the subtree that differs).
5. The tree of the older checkpoint's size has that checkpoint's root
   (``audit-consistency``: a fork, i.e. history rewritten after it was signed).
6. The whole tree has the signed root (``audit-tree``).

What can be localised. An edit that leaves the tiles alone is named exactly
(step 3), as is any change of order (the index field). If the tiles were
rewritten to match, step 4 names the 256**L-entry subtree whose stored hash
still differs; if every tile up to the top was rewritten, only the signed root
disagrees (step 6) and nothing in the log says which entry changed. A log
operator who also re-signs (holds the key) can rewrite everything but the
checkpoints already handed out: step 5 then refuses the fork, and locating the
changed entry needs a saved copy of the older log (compare entries) -- the old
root alone cannot point at a leaf.

Memory: the tree's right edge (O(log n) hashes), one bundle, one tile per level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from otaguard.audit.checkpoint import Checkpoint, open_checkpoint
from otaguard.audit.entry import entry_index
from otaguard.audit.merkle import HASH_SIZE, CompactRange, Node, leaf_hash
from otaguard.audit.note import VerifierKey
from otaguard.audit.tiles import (
    CHECKPOINT,
    TILE_HEIGHT,
    TILE_WIDTH,
    LogReader,
    entries_path,
    parse_bundle,
    read_tile,
    tile_path,
    tile_width,
)
from otaguard.crypto.keys import PublicKey
from otaguard.errors import (
    AuditCheckpointError,
    AuditConsistencyError,
    AuditEntryError,
    AuditTreeError,
    AuditTruncatedError,
    UsageError,
)

TrustedKey = VerifierKey | PublicKey


@dataclass(frozen=True)
class VerifiedLog:
    """What the verifier established."""

    checkpoint: Checkpoint
    old_checkpoint: Checkpoint | None


def read_checkpoint(read: LogReader, trusted: Sequence[TrustedKey]) -> Checkpoint:
    """Step 1: the log's current checkpoint, verified."""
    try:
        data = read(CHECKPOINT)
    except FileNotFoundError:
        raise AuditCheckpointError("the log has no checkpoint") from None
    return open_checkpoint(data, trusted)


def verify_log(
    read: LogReader,
    trusted: Sequence[TrustedKey],
    *,
    old_checkpoint: bytes | None = None,
) -> VerifiedLog:
    """Run steps 1-6 above; raise an :class:`~otaguard.errors.AuditError` subclass."""
    if not trusted:
        raise UsageError("no trusted audit key")
    checkpoint = read_checkpoint(read, trusted)
    old = None
    if old_checkpoint is not None:
        old = open_checkpoint(old_checkpoint, trusted)
        if old.origin != checkpoint.origin:
            raise UsageError(
                f"the older checkpoint is of log {old.origin!r}, not {checkpoint.origin!r}"
            )
        if old.size > checkpoint.size:
            raise AuditTruncatedError(
                f"the log has {checkpoint.size} entries but an older checkpoint has {old.size}: "
                f"entries {checkpoint.size} to {old.size - 1} were deleted",
                index=checkpoint.size,
            )
    _Scan(read, checkpoint, old).run()
    return VerifiedLog(checkpoint, old)


def _misplaced(position: int, claimed: int) -> str:
    if claimed > position:
        return (
            f"position {position} holds entry {claimed}: entry {position} was deleted "
            f"or the entries were reordered"
        )
    return (
        f"position {position} holds entry {claimed}: an entry was inserted before it "
        f"or the entries were reordered"
    )


class _Scan:
    """Steps 3-6 in one pass over the bundles."""

    def __init__(self, read: LogReader, checkpoint: Checkpoint, old: Checkpoint | None) -> None:
        self.read = read
        self.size = checkpoint.size
        self.checkpoint = checkpoint
        self.old = old
        self.tree = CompactRange.empty()
        self._upper: dict[int, tuple[int, bytes]] = {}  # level -> (tile index, tile)

    def run(self) -> None:
        for bundle in range(-(-self.size // TILE_WIDTH)):
            self._bundle(bundle)
        # 6.
        if self.tree.root() != self.checkpoint.root:
            raise AuditTreeError(
                f"the {self.size} entries and their tiles agree but do not hash to the "
                f"signed root: the log was rewritten, tiles included"
            )

    def _bundle(self, bundle: int) -> None:
        start = bundle * TILE_WIDTH
        width = tile_width(self.size, 0, bundle)
        leaves = read_tile(self.read, 0, bundle, width)
        path = entries_path(bundle, width)
        try:
            raw = self.read(path)
        except FileNotFoundError:
            raise AuditTruncatedError(
                f"entry bundle {path} is missing: entries from {start} on are gone", index=start
            ) from None
        try:
            entries = parse_bundle(raw)
        except AuditTreeError as exc:
            position = start + (exc.index or 0)
            raise AuditTruncatedError(f"entry {position}: {exc}", index=position) from None
        hashes = []
        for offset, data in enumerate(entries[:width]):
            position = start + offset
            try:
                claimed = entry_index(data)
            except AuditEntryError as exc:
                raise AuditEntryError(f"entry {position}: {exc}", index=position) from None
            if claimed != position:
                raise AuditEntryError(_misplaced(position, claimed), index=position)
            digest = leaf_hash(data)
            if digest != leaves[offset * HASH_SIZE : (offset + 1) * HASH_SIZE]:
                raise AuditTreeError(
                    f"entry {position} does not match its leaf hash in "
                    f"{tile_path(0, bundle, width)}: the entry was edited",
                    index=position,
                )
            hashes.append(digest)
        if len(entries) < width:
            position = start + len(entries)
            raise AuditTruncatedError(
                f"the log ends at entry {position - 1} but its checkpoint has {self.size}: "
                f"entry {position} was deleted",
                index=position,
            )
        if len(entries) > width:
            raise AuditEntryError(
                f"{path} holds {len(entries)} entries, not {width}: an entry was inserted",
                index=start + width,
            )
        old_size = self.old.size if self.old else 0
        cut = old_size - start if start < old_size <= start + width else len(hashes)
        self._append(hashes[:cut])
        if cut < len(hashes) or old_size == start + width:
            self._check_old()
            self._append(hashes[cut:])

    def _append(self, hashes: list[bytes]) -> None:
        self.tree, nodes = self.tree.append(hashes)
        for node in nodes:
            if node.level and not node.level % TILE_HEIGHT:
                self._check_node(node)

    def _check_node(self, node: Node) -> None:
        """Step 4: a level-8L node against its hash stored in tile level L."""
        level = node.level // TILE_HEIGHT
        index, offset = divmod(node.index, TILE_WIDTH)
        cached = self._upper.get(level)
        if cached is None or cached[0] != index:
            width = tile_width(self.size, level, index)
            cached = (index, read_tile(self.read, level, index, width))
            self._upper[level] = cached
        stored = cached[1][offset * HASH_SIZE : (offset + 1) * HASH_SIZE]
        if stored != node.hash:
            first = node.index << node.level
            last = first + (1 << node.level) - 1
            raise AuditTreeError(
                f"entries {first} to {last} do not hash to their stored hash in "
                f"{tile_path(level, index, tile_width(self.size, level, index))}: one of them "
                f"was edited and the tiles below rewritten to match",
                index=first,
            )

    def _check_old(self) -> None:
        """Step 5: the tree at the older checkpoint's size."""
        assert self.old is not None
        if self.tree.root() != self.old.root:
            raise AuditConsistencyError(
                f"the first {self.old.size} entries no longer hash to the root of the older "
                f"checkpoint: the history was rewritten after it was signed (a fork)"
            )
