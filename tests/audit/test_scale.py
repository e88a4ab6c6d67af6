"""Proofs at one million entries: generated from hash tiles with O(log n) tile
reads, verified by our RFC 9162 verifier and by sigstore-python's."""

from __future__ import annotations

import hashlib
import random

import pytest

from helpers_audit import MemoryLog, sigstore_inclusion
from otaguard.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from otaguard.audit.tiles import TILE_HEIGHT, TILE_WIDTH, TileHashSource, tile_path, tile_width
from otaguard.errors import AuditConsistencyError, AuditTreeError

SIZE = 1_000_000


def _entry(i: int) -> bytes:
    return b"%d" % i


@pytest.fixture(scope="module")
def million() -> tuple[MemoryLog, CompactRange]:
    """The hash tiles of a 1M-entry tree (levels 0, 1, 2), built by CompactRange.append."""
    levels: list[bytearray] = [bytearray(), bytearray(), bytearray()]
    tree = CompactRange.empty()
    step = 1 << 16
    for start in range(0, SIZE, step):
        leaves = [leaf_hash(_entry(i)) for i in range(start, min(start + step, SIZE))]
        tree, created = tree.append(leaves)
        for node in created:
            if not node.level % TILE_HEIGHT:
                levels[node.level // TILE_HEIGHT] += node.hash
    log = MemoryLog()
    for level, data in enumerate(levels):
        count = len(data) // 32
        for index in range(-(-count // TILE_WIDTH)):
            width = tile_width(SIZE, level, index)
            chunk = data[index * TILE_WIDTH * 32 : (index * TILE_WIDTH + width) * 32]
            log.files[tile_path(level, index, width)] = bytes(chunk)
    return log, tree


def test_inclusion_and_consistency_at_a_million(million: tuple[MemoryLog, CompactRange]) -> None:
    log, tree = million
    root = tree.root()
    rng = random.Random(15)
    source = TileHashSource(log.read, SIZE, cache_tiles=0)
    assert root_hash(source, SIZE) == root
    for index in [0, 1, 255, 256, 65535, SIZE - 2, SIZE - 1, *rng.sample(range(SIZE), 20)]:
        log.reads = 0
        proof = inclusion_proof(source, index, SIZE)
        assert log.reads <= 2 * SIZE.bit_length() + 2  # O(log n) tile reads, never O(n)
        verify_inclusion(leaf_hash(_entry(index)), index, SIZE, proof, root)
        sigstore_inclusion(_entry(index), index, SIZE, proof, root)
        with pytest.raises(AuditTreeError):
            verify_inclusion(leaf_hash(_entry(index + 1)), index, SIZE, proof, root)
    for old in [1, 256, 65536, 999_999, *rng.sample(range(1, SIZE), 20)]:
        log.reads = 0
        proof = consistency_proof(source, old, SIZE)
        assert log.reads <= 2 * SIZE.bit_length() + 2
        old_root = root_hash(source, old)
        verify_consistency(old, SIZE, proof, old_root, root)
        forked = hashlib.sha256(old_root).digest()
        with pytest.raises(AuditConsistencyError):
            verify_consistency(old, SIZE, proof, forked, root)
