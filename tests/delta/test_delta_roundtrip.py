"""Round trips: random and structured data, empty, identical and unrelated inputs, fallback."""

from __future__ import annotations

import hashlib
import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_image
from helpers_delta import HW, Pair, apply_bytes, edit, make_delta, resign, zdict_of
from otaguard.delta.apply import add_bytes
from otaguard.delta.engine import create_container
from otaguard.delta.format import MIN_CHUNK_SIZE
from otaguard.delta.package import split_image
from otaguard.image import Digest, HashAlgorithm


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_add_bytes_is_bytewise_addition(a: bytes, b: bytes) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert add_bytes(a, b) == bytes((x + y) & 0xFF for x, y in zip(a, b, strict=True))


def test_pair_round_trip_verified(pair: Pair) -> None:
    delta = pair.delta()
    assert apply_bytes(pair.old, delta, pair.trusted) == pair.new
    assert len(delta) < len(pair.new) // 5


def _images(key, old_payload: bytes, new_payload: bytes) -> tuple[bytes, bytes]:
    old = make_image(old_payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(new_payload, [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    return old, new


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=20_000), st.integers(0, 2**32), st.integers(0, 12))
def test_round_trip_random_edits(key, payload: bytes, seed: int, edits: int) -> None:
    new_payload = edit(payload, seed, edits) if payload else payload
    old, new = _images(key, payload, new_payload)
    delta, _stats = make_delta(key, old, new, chunk_size=MIN_CHUNK_SIZE)
    assert apply_bytes(old, delta, None) == new


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=9000), st.binary(max_size=9000))
def test_round_trip_unrelated(key, a: bytes, b: bytes) -> None:
    old, new = _images(key, a, b)
    delta, _stats = make_delta(key, old, new, chunk_size=MIN_CHUNK_SIZE)
    assert apply_bytes(old, delta, None) == new


def test_structured_data_shifted_code(key) -> None:
    rnd = random.Random(3)
    words = [rnd.randrange(1 << 16) for _ in range(4000)]
    code = b"".join(w.to_bytes(4, "little") for w in words)
    moved = (
        code[:6000] + b"\x00" * 100 + bytes((b + 1) & 0xFF for b in code[6000:6400]) + code[6400:]
    )
    old, new = _images(key, code, moved)
    delta, stats = make_delta(key, old, new, chunk_size=1 << 12)
    assert apply_bytes(old, delta, None) == new
    assert not stats.full_fallback
    assert len(delta) < len(new) // 10


def test_empty_payloads(key) -> None:
    old, new = _images(key, b"", b"")
    delta, stats = make_delta(key, old, new)
    assert stats.chunks == 0
    assert apply_bytes(old, delta, None) == new


def test_empty_old_image_file(key) -> None:
    """The applier takes a base of no bytes; ``create`` refuses to make such a delta (an empty
    file is no image: tests/delta/test_delta_create_checks.py), so it is built by hand."""
    old, new = _images(key, b"", b"new firmware" * 100)
    made, _stats = make_delta(key, old, new)  # the envelope, re-signed around the container
    image = split_image(new)
    parts, _stats = create_container(
        b"", image.signed, image.payload, image.signatures, zdict=zdict_of(made)
    )
    empty = Digest(HashAlgorithm.SHA256, hashlib.sha256(b"").digest())
    delta = resign(key, made, b"".join(parts), delta_base=empty)
    assert apply_bytes(b"", delta, None) == new


def test_identical_images_make_a_tiny_delta(pair: Pair) -> None:
    delta, stats = make_delta(pair.key, pair.new, pair.new)
    assert apply_bytes(pair.new, delta, pair.trusted) == pair.new
    assert not stats.full_fallback
    assert len(delta) < 1200


def test_unrelated_images_fall_back_to_compressed_full(key) -> None:
    rnd = random.Random(9)
    text = b"".join(rnd.choice([b"alpha ", b"beta ", b"gamma ", b"delta "]) for _ in range(5000))
    old, new = _images(key, rnd.randbytes(20_000), text)
    delta, stats = make_delta(key, old, new, chunk_size=1 << 12)
    assert stats.full_fallback and stats.literal_chunks == stats.chunks
    assert len(delta) < len(new) // 3  # compressed
    assert apply_bytes(old, delta, None) == new


def test_chunk_sizes_give_the_same_image(pair: Pair) -> None:
    for size in (1 << 12, 1 << 14, 1 << 22):
        assert apply_bytes(pair.old, pair.delta(chunk_size=size), pair.trusted) == pair.new


def test_creation_is_deterministic(pair: Pair) -> None:
    assert pair.delta() == pair.delta()


def test_long_periodic_runs_are_fast_and_exact(key) -> None:
    import time

    rnd = random.Random(5)
    old_payload = rnd.randbytes(30_000) + bytes(300_000) + b"\xff" * 50_000 + rnd.randbytes(9000)
    new_payload = (
        old_payload[:20_000]
        + b"\xab\xcd" * 40_000
        + bytes(400_000)
        + rnd.randbytes(100)
        + old_payload[25_000:40_000]
        + b"\x01\x02\x03" * 2000
    )
    old, new = _images(key, old_payload, new_payload)
    start = time.perf_counter()
    delta, _stats = make_delta(key, old, new, chunk_size=1 << 16)
    assert time.perf_counter() - start < 20  # bsdiff alone: minutes on runs like these
    assert apply_bytes(old, delta, None) == new
    assert len(delta) < 4000


_RUN_UNITS = st.binary(min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=3000),
            st.tuples(_RUN_UNITS, st.integers(1, 1500)).map(lambda t: t[0] * t[1]),
        ),
        max_size=8,
    )
)
def test_periodic_runs_are_found_exactly(parts: list[bytes]) -> None:
    """The linear-time run finder agrees with the definition (a backreferencing regex)."""
    import re

    from otaguard.delta.runs import periodic_runs

    data = b"".join(parts)
    spans = periodic_runs(data)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # disjoint, sorted
    for start, end in spans:
        assert end - start >= 1024
        assert any(  # each span is covered by periodic stretches of period 1 to 4
            all(data[i] == data[i + p] for i in range(start, min(end, start + 64) - p))
            for p in range(1, 5)
        )
    reference = re.compile(rb"(.{1,4}?)\1{255,}", re.S)
    for match in reference.finditer(data):
        if match.end() - match.start() >= 1024:  # every run the old finder saw is covered
            assert any(s <= match.start() and match.end() <= e for s, e in spans)
