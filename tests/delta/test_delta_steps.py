"""Step clean-up and re-alignment keep the steps exact while making the diff sparser."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otaguard.delta.apply import add_bytes, sub_bytes
from otaguard.delta.matcher import Matcher
from otaguard.delta.realign import realign
from otaguard.delta.steps import chunk_steps


def _rebuild(old: bytes, control, diffs, extras) -> bytes:  # type: ignore[no-untyped-def]
    """Run steps as the applier does (old position starts at 0)."""
    out, old_pos = bytearray(), 0
    for (add, copy, seek), diff, extra in zip(control, diffs, extras, strict=True):
        assert len(diff) == add and len(extra) == copy
        out += add_bytes(old[old_pos : old_pos + add], diff) + extra
        old_pos += add + seek
    return bytes(out)


def _table(records: list[bytes]) -> bytes:
    return b"".join(records)


def _inode_tables(seed: int) -> tuple[bytes, bytes]:
    """An inode-table-like pair: 256-byte records, one inserted, a time stamp and a
    checksum changed in each, so a step past the insertion reads the wrong records."""
    rnd = random.Random(seed)
    records = [bytes(rnd.randbytes(8)) + bytes(240) + rnd.randbytes(8) for _ in range(160)]
    new = [r[:8] + bytes(120) + b"\x40" + bytes(119) + rnd.randbytes(4) + r[252:] for r in records]
    new.insert(40, rnd.randbytes(256))
    return _table(records), _table(new)


def test_realign_makes_a_misaligned_step_sparse_and_stays_exact() -> None:
    old, new = _inode_tables(1)
    n = min(len(old), len(new))  # one step along diagonal 0, past the inserted record
    control = [(n, len(new) - n, 0)]
    diffs, extras = [sub_bytes(new[:n], old[:n])], [new[n:]]
    before = sum(len(d) - d.count(0) for d in diffs)
    steps = realign(old, new, control, diffs, extras)
    assert _rebuild(old, *steps) == new
    after = sum(len(d) - d.count(0) for d in steps[1])
    assert after < before // 2, (before, after)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 1 << 16), cut=st.integers(0, 4096))
def test_chunk_steps_rebuild_the_chunk(seed: int, cut: int) -> None:
    """Whatever bsdiff, the clean-ups and the re-alignment do, the steps rebuild the chunk."""
    old, new = _inode_tables(seed)
    new = new[:cut] + random.Random(seed).randbytes(17) + new[cut:]
    matcher = Matcher(old)
    try:
        steps = chunk_steps(matcher, new)
    finally:
        matcher.close()
    assert _rebuild(old, *steps) == new
