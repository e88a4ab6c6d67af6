"""Step clean-up and re-alignment keep the steps exact while making the diff sparser."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otaguard.delta.apply import add_bytes, sub_bytes
from otaguard.delta.matcher import Matcher, _last
from otaguard.delta.realign import realign
from otaguard.delta.steps import chunk_steps


def _rebuild(old: bytes, control, diffs, extras) -> bytes:
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


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300)
    | st.lists(st.sampled_from([b"\x00" * 7, b"\x00", b"\x01", b"ab"])).map(b"".join),
    st.binary(min_size=1, max_size=6) | st.sampled_from([b"\x00" * 4, b"\x00\x01", b"a"]),
    st.integers(0, 320),
    st.integers(0, 320),
)
def test_last_is_rfind(data: bytes, needle: bytes, start: int, end: int) -> None:
    """The matcher's linear-time rfind (CPython's own is quadratic on periodic runs)."""
    assert _last(data, needle, start, end) == data.rfind(needle, start, end)


def test_a_long_run_near_periodic_old_bytes_is_found_before() -> None:
    """A zero run whose nearest copy in the old image lies before it (the rfind case)."""
    old = bytearray(300_000)
    for at in range(0, len(old), 997):
        old[at] = 1  # zeros cut every ~1 KB: no 2 KiB run of zeros anywhere ...
    old[100_000:140_000] = bytes(40_000)  # ... but here
    matcher = Matcher(bytes(old))
    try:
        zeros_end = 997 * 141  # the first 1 after the region
        assert matcher._find_run(bytes(30_000), 150_000) == zeros_end - 30_000  # the last fit
    finally:
        matcher.close()
