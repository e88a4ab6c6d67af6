"""Diff and control codings: XOR zero runs (checksums) and repeated triples (insertions)."""

from __future__ import annotations

import lzma
import random
import zlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_image
from helpers_delta import (
    HW,
    Pair,
    apply_bytes,
    assert_mutations_refused_or_exact,
    container_of,
    header_of,
    parts_of,
    resign,
    split_container,
    zdict_of,
)
from otaguard.crypto.keys import PrivateKey
from otaguard.delta.apply import xor_bytes
from otaguard.delta.format import (
    EDIT_WINDOW,
    FLAG_JOINED,
    FLAG_REPEAT,
    DiffCoding,
    Filter,
    decode_triples,
    encode_header,
    encode_triple,
    encode_triples,
    lzma_filters,
    next_edit,
    uvarint,
)
from otaguard.delta.predict import Arch
from otaguard.errors import MalformedError


def _records(seed: int, edited: bool) -> bytes:
    """Records of 60 data bytes and their CRC-32: the same edit in each changes every CRC
    by the same XOR pattern (CRC is affine), but by different differences."""
    rnd = random.Random(seed)
    out = bytearray()
    for _ in range(600):
        body = bytearray(rnd.randbytes(60))
        if edited:
            body[10] ^= 0x01
        out += body + zlib.crc32(body).to_bytes(4, "little")
    return bytes(out)


@pytest.fixture(scope="module")
def crc_pair(key: PrivateKey) -> Pair:
    old = make_image(
        _records(4, False), [key], version="1.0.0", security_counter=1, hardware_ids=(HW,)
    )
    new = make_image(
        _records(4, True), [key], version="1.1.0", security_counter=2, hardware_ids=(HW,)
    )
    return Pair(key, old, new)


def test_checksums_changed_alike_are_coded_as_xor(crc_pair: Pair) -> None:
    delta = crc_pair.delta(chunk_size=1 << 20, zstd=False)
    assert header_of(delta).diff_coding is DiffCoding.ZERO_RUNS_XOR
    assert apply_bytes(crc_pair.old, delta, crc_pair.trusted) == crc_pair.new


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_xor_bytes(a: bytes, b: bytes) -> None:
    b = (b * (len(a) // max(1, len(b)) + 1))[: len(a)] if b else bytes(len(a))
    assert xor_bytes(a, b) == bytes(x ^ y for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError):
        xor_bytes(a, a + b"\x00")


def test_xor_coding_with_a_predictor_is_refused(key: PrivateKey, code_pair: Pair) -> None:
    delta = code_pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.THUMB2)
    head, rest, zdict = split_container(delta)
    assert head.predictor is Arch.THUMB2
    forged_head = replace(head, diff_coding=DiffCoding.ZERO_RUNS_XOR)
    forged = resign(key, delta, encode_header(forged_head, zdict) + rest)
    with pytest.raises(MalformedError, match="XOR"):
        apply_bytes(code_pair.old, forged, code_pair.trusted)


triples = st.lists(
    st.tuples(
        st.integers(0, 2**20), st.sampled_from([0, 8, 8, 8, 300]), st.sampled_from([0, -2, 0, 77])
    ),
    max_size=40,
)


@given(triples)
def test_repeated_triples_round_trip(steps: list[tuple[int, int, int]]) -> None:
    plain, repeated = encode_triples(steps), encode_triples(steps, repeat=True)
    assert plain == b"".join(encode_triple(*t) for t in steps)
    assert decode_triples(plain) == decode_triples(repeated, repeat=True) == steps
    assert len(repeated) <= len(plain) + len(steps)  # one bit more at most, a byte less often


def test_insertions_repeat_their_copy_and_seek() -> None:
    steps = [(20, 8, 0)] * 50
    assert len(encode_triples(steps, repeat=True)) < len(encode_triples(steps)) // 2


def _def_tree(n: int) -> tuple[bytes, bytes, list[tuple[int, int, int]]]:
    """Old text with ``def `` every so often, the new one with ``release_`` after each,
    and the triples that make one from the other (match up to the edit, insert 8 bytes)."""
    rnd = random.Random(n)
    pieces = [rnd.randbytes(rnd.randrange(20, 400)).replace(b"def ", b"xxxx") for _ in range(n)]
    old = b"".join(p + b"def " for p in pieces) + b"tail"
    new = b"".join(p + b"def release_" for p in pieces) + b"tail"
    steps = [(len(p) + 4, 8, 0) for p in pieces] + [(4, 0, 0)]
    return old, new, steps


def _read(old: bytes):
    return lambda at, n: old[at : at + n]


def test_next_edit_finds_where_the_same_edit_goes() -> None:
    old = b"....def abc def xyz" + bytes(10)
    assert next_edit(_read(old), 8, 8) == len(" abc def")  # from after the first "def "
    assert next_edit(_read(old), 8, 17) is None  # no third one
    assert next_edit(_read(old), 3, 0) is None  # no context before the edit point
    assert next_edit(_read(old), 8, -1) is None
    far = b"def " + bytes(EDIT_WINDOW) + b"def "
    assert next_edit(_read(far), 4, 4) is None  # beyond the window


def test_predicted_edits_cost_a_byte_and_round_trip() -> None:
    old, _new, steps = _def_tree(150)
    plain = encode_triples(steps, repeat=True)
    predicted = encode_triples(steps, repeat=True, read_at=_read(old))
    assert len(plain) > 2 * len(steps) - 5  # two bytes a triple: its add
    assert len(predicted) <= len(steps) + 6  # one byte a triple: "the same edit again"
    assert decode_triples(predicted, repeat=True, read_at=_read(old)) == steps
    with pytest.raises(MalformedError, match="predicted edit"):
        decode_triples(predicted, repeat=True)  # without the old image: refused
    with pytest.raises(MalformedError, match="unknown kind"):
        decode_triples(encode_triple(4 * 10, 8, 0) + uvarint(4 * 3 + 2), repeat=True)
    with pytest.raises(MalformedError, match="unknown kind"):
        decode_triples(encode_triple(4 * 10, 8, 0) + uvarint(3), repeat=True)


def test_predicted_edits_in_a_delta(key: PrivateKey) -> None:
    old_payload, new_payload, _steps = _def_tree(400)
    old = make_image(old_payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(new_payload, [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 12, zstd=False)
    head = header_of(delta)
    assert head.repeat and head.chunk_count > 1
    assert apply_bytes(old, delta, pair.trusted) == new


def _with_control(pair: Pair, raw: bytes) -> bytes:
    """The pair's delta with ``raw`` as its (FLAG_REPEAT, own-stream) control stream."""
    delta = pair.delta()
    zdict = zdict_of(delta)
    head, table, streams = parts_of(container_of(delta), zdict)
    control = lzma.compress(
        raw, format=lzma.FORMAT_RAW, filters=lzma_filters(Filter.NONE, head.dict_size)
    )
    forged_head = replace(
        head, flags=(head.flags | FLAG_REPEAT) & ~FLAG_JOINED, control_length=len(control)
    )
    body = encode_header(forged_head, zdict, table) + control + b"".join(streams[1:])
    return resign(pair.key, delta, body)


def test_a_predicted_edit_with_no_place_is_refused(pair: Pair) -> None:
    raw = encode_triple(4 * 0, 0, 0) + uvarint(2)  # a seek, then "the same edit again"
    with pytest.raises(MalformedError, match="predicted edit"):
        apply_bytes(pair.old, _with_control(pair, raw), pair.trusted)


def test_a_repeat_without_a_previous_triple_is_refused(pair: Pair) -> None:
    with pytest.raises(MalformedError, match="previous"):
        decode_triples(b"\x03", repeat=True)
    raw = encode_triple(2 * 5 + 1, 0, 0)  # "repeat" as the very first triple
    with pytest.raises(MalformedError, match="previous"):
        apply_bytes(pair.old, _with_control(pair, raw), pair.trusted)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_xor_and_repeat_containers(crc_pair: Pair, data: st.DataObject) -> None:
    """Any mutation of a delta using XOR coding (and, where chosen, repeated triples) is
    refused cleanly or still rebuilds exactly the image."""
    delta = crc_pair.delta(chunk_size=1 << 20, zstd=False)
    assert_mutations_refused_or_exact(crc_pair, delta, data)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_predicted_edit_containers(key: PrivateKey, data: st.DataObject) -> None:
    old_payload, new_payload, _steps = _def_tree(60)
    old = make_image(old_payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(new_payload, [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    pair = Pair(key, old, new)
    assert_mutations_refused_or_exact(pair, pair.delta(chunk_size=1 << 12, zstd=False), data)
