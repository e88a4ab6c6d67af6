"""A file-backed audit log in the tiles layout: the evidence an offline
ceremony (signing, PKI) leaves, later submitted to the fleet server's log.

Why these rules:

* The directory *is* a static export (``checkpoint``, ``tile/...``): copy it to
  a web server and ``otaguard audit verify`` checks it like the server's log.
* The checkpoint, written last through ``otaguard._atomic`` after every tile and
  directory is fsynced, is the commit point. A crash before it leaves files the
  checkpoint does not reach (other partial widths, or full tiles past its size):
  readers never ask for them and the next append overwrites them.
* Before appending, the log's checkpoint must verify with the appender's key
  and the stored right edge must hash to its root, so an append never builds
  on a tampered log or mixes two keys in one log.
* Appenders are serialised with an exclusive ``flock`` on ``DIR/.lock``.
* Partial tiles are deleted once their full tile exists (tlog-tiles allows it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from otaguard._atomic import write_atomic
from otaguard.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from otaguard.audit.entry import AuditEvent, encode_entry
from otaguard.audit.merkle import EMPTY_ROOT, CompactRange
from otaguard.audit.note import VerifierKey
from otaguard.audit.tiles import (
    CHECKPOINT,
    TILE_HEIGHT,
    DirectoryReader,
    DirectoryWriter,
    TileAppender,
    TileHashSource,
    entries_path,
    fsync_directory,
    parse_bundle,
    tile_path,
    tile_width,
)
from otaguard.crypto.keys import PublicKey
from otaguard.crypto.signer import Signer
from otaguard.errors import AuditTreeError, StorageError, UsageError

LOCK = ".lock"


class LocalLog:
    """The audit log in ``directory``; every method takes the lock for its duration."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / LOCK, "a+b")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise StorageError(f"cannot lock {self.directory}: {exc.strerror or exc}") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def create(self, origin: str, signer: Signer) -> Checkpoint:
        """Start an empty log named ``origin``, signed by ``signer`` (the audit key)."""
        VerifierKey.for_public_key(origin, signer.public_key)  # a usable name and key type
        with self._locked():
            if (self.directory / CHECKPOINT).exists():
                raise UsageError(f"{self.directory} already holds an audit log")
            checkpoint = Checkpoint(origin, 0, EMPTY_ROOT)
            self._commit(checkpoint, signer)
            return checkpoint

    def checkpoint(self, signer: Signer) -> Checkpoint:
        """The current checkpoint, verified with ``signer``'s public key."""
        try:
            data = DirectoryReader(self.directory)(CHECKPOINT)
        except FileNotFoundError:
            raise UsageError(f"{self.directory} holds no audit log (audit init)") from None
        VerifierKey.for_public_key(
            "audit", signer.public_key
        )  # the key type, before blaming the log
        return open_checkpoint(data, [signer.public_key])

    def checked(self, signer: Signer) -> Checkpoint:
        """The current checkpoint, verified, and the stored tiles checked against its root:
        what a command checks before it runs, so that its evidence can be recorded."""
        checkpoint = self.checkpoint(signer)
        source = TileHashSource(DirectoryReader(self.directory), checkpoint.size)
        if CompactRange.from_source(source, checkpoint.size).root() != checkpoint.root:
            raise AuditTreeError(
                f"{self.directory}: the stored tiles do not match the signed checkpoint"
            )
        return checkpoint

    def append(self, events: Sequence[AuditEvent], signer: Signer) -> tuple[int, Checkpoint]:
        """Append ``events`` (indexes assigned in order) and sign the new checkpoint.

        Returns the index of the first new entry and the new checkpoint.
        """
        with self._locked():
            current = self.checkpoint(signer)
            read = DirectoryReader(self.directory)
            tree = CompactRange.from_source(TileHashSource(read, current.size), current.size)
            if tree.root() != current.root:
                raise AuditTreeError(
                    f"{self.directory}: the stored tiles do not match the signed checkpoint"
                )
            entries = [encode_entry(current.size + i, e) for i, e in enumerate(events)]
            writer = DirectoryWriter(self.directory)
            appender = TileAppender(tree, writer, read)
            appender.append(entries)
            tree = appender.flush()
            writer.sync()
            new = Checkpoint(current.origin, tree.size, tree.root())
            self._commit(new, signer)
            self._prune(current.size, new.size)
            return current.size, new

    def _commit(self, checkpoint: Checkpoint, signer: Signer) -> None:
        write_atomic(self.directory / CHECKPOINT, sign_checkpoint(checkpoint, signer))
        fsync_directory(self.directory)

    def _prune(self, old_size: int, new_size: int) -> None:
        """Delete the partial versions of tiles that became full (garbage, never read)."""
        level = 0
        while old_size >> (TILE_HEIGHT * level):
            first = old_size >> (TILE_HEIGHT * (level + 1))
            full = new_size >> (TILE_HEIGHT * (level + 1))
            for index in range(first, full):
                self._remove_partials(tile_path(level, index) + ".p")
                if level == 0:
                    self._remove_partials(entries_path(index) + ".p")
            level += 1

    def _remove_partials(self, relative: str) -> None:
        directory = self.directory / relative
        with contextlib.suppress(OSError):
            for child in directory.iterdir():
                child.unlink()
            directory.rmdir()


def append_event(directory: str | os.PathLike[str], event: AuditEvent, signer: Signer) -> int:
    """Record one event in the local log at ``directory``; its index.

    The one call a signing or PKI command makes for ``--audit-log DIR``.
    """
    first, _ = LocalLog(directory).append([event], signer)
    return first


def write_export(
    directory: str | os.PathLike[str], entries: Iterable[bytes], origin: str, signer: Signer
) -> Checkpoint:
    """Write ``entries`` (encoded, in index order) as a complete static export.

    Streams: memory is one bundle and one tile per level, whatever the log's size.
    The checkpoint is written last; ``directory`` should be new or empty.
    """
    VerifierKey.for_public_key(origin, signer.public_key)
    writer = DirectoryWriter(directory)
    appender = TileAppender(CompactRange.empty(), writer)
    appender.append(entries)
    tree = appender.flush()
    writer.sync()
    checkpoint = Checkpoint(origin, tree.size, tree.root())
    writer(CHECKPOINT, sign_checkpoint(checkpoint, signer))
    writer.sync()
    return checkpoint


#: The most entries one submission carries (the server's cap: docs/audit.md).
MAX_SUBMITTED = 50_000


@dataclass(frozen=True)
class LocalSubmission:
    """A local log, verified whole: what ``fleet audit submit`` sends."""

    note: bytes
    key: VerifierKey
    entries: list[bytes]


def read_for_submission(directory: str, key: VerifierKey | PublicKey) -> LocalSubmission:
    """The local log in ``directory``, verified whole against ``key`` (signature, every
    entry, tiles and root), with its entries and the verifier key the server is given
    (``key``, or the public key named by the log's origin)."""
    from otaguard.audit.verify import verify_log

    read = DirectoryReader(directory)
    checked = verify_log(read, [key])  # everything: signature, entries, tiles, root
    size = checked.checkpoint.size
    if size > MAX_SUBMITTED:
        raise UsageError(f"{directory} holds {size} entries: at most 50,000 per submission")
    entries: list[bytes] = []
    for bundle in range(-(-size // 256)):
        entries += parse_bundle(read(entries_path(bundle, tile_width(size, 0, bundle))))
    if not isinstance(key, VerifierKey):
        key = VerifierKey.for_public_key(checked.checkpoint.origin, key)
    return LocalSubmission(read(CHECKPOINT), key, entries)
