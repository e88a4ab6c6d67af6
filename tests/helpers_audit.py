"""Audit-log test helpers: events, logs written to a directory or to memory, and the
attacker's tools (rewrite the tiles to match edited entries, re-sign with the key)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from sigstore._internal.merkle import verify_merkle_inclusion

from helpers import cached_key
from otaguard.audit import Actor, AuditEvent, Checkpoint, encode_entry, write_export
from otaguard.audit.merkle import CompactRange, HashSource, leaf_hash
from otaguard.audit.tiles import CHECKPOINT, TileAppender
from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import KeySigner

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
ORIGIN = "audit.otaguard.test/fleet"
ACTIONS = ("image.sign", "cert.issue", "campaign.start", "device.install", "killswitch.decision")


def audit_signer(index: int = 0) -> KeySigner:
    return KeySigner(cached_key(KeyType.ED25519, 10 + index))


def event(i: int) -> AuditEvent:
    return AuditEvent(
        T0 + dt.timedelta(seconds=i),
        Actor("operator", f"token-{i % 7}", "release-manager"),
        ACTIONS[i % len(ACTIONS)],
        f"vehicle-{i:07d}",
        {"ecu": "gateway", "version": f"1.{i % 50}.0", "security_counter": i % 50},
    )


def entries(n: int, start: int = 0) -> list[bytes]:
    return [encode_entry(i, event(i)) for i in range(start, start + n)]


def export(directory: Path, raw: Sequence[bytes], signer: KeySigner | None = None) -> Checkpoint:
    return write_export(directory, raw, ORIGIN, signer or audit_signer())


class MemoryLog:
    """A tiles layout in a dict: a reader and a writer for tests and proofs at scale."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.reads = 0

    def read(self, path: str) -> bytes:
        self.reads += 1
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data


def rewrite_tiles(
    directory: Path, raw: Sequence[bytes], *, resign: KeySigner | None = None
) -> None:
    """What an attacker with write access does: rebuild every tile from ``raw``.

    The checkpoint is kept unless ``resign`` (the log's own key) signs a new one.
    """
    checkpoint = (directory / CHECKPOINT).read_bytes()
    shutil.rmtree(directory)
    if resign is not None:
        export(directory, raw, resign)
        return
    memory = MemoryLog()
    appender = TileAppender(CompactRange.empty(), memory.write)
    appender.append(raw)
    appender.flush()
    for path, data in memory.files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(data)
    (directory / CHECKPOINT).write_bytes(checkpoint)


class ListSource(HashSource):
    """Every node of a tree of leaf hashes, computed naively (reference for tests)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        tree = CompactRange.empty()
        _, created = tree.append(leaf_hash(x) for x in leaves)
        for node in created:
            self.nodes[(node.level, node.index)] = node.hash

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


def sigstore_inclusion(
    entry: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    """sigstore-python's verify_merkle_inclusion (independent of ours), fed the two
    attributes of a Rekor entry it reads."""
    inner = SimpleNamespace(
        inclusion_proof=SimpleNamespace(
            log_index=index, tree_size=size, hashes=proof, root_hash=root
        ),
        canonicalized_body=entry,
    )
    verify_merkle_inclusion(SimpleNamespace(_inner=inner))  # type: ignore[arg-type]
