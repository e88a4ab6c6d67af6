"""Diff and control codings: XOR zero runs (checksums) and repeated triples (insertions)."""

from __future__ import annotations

import io
import lzma
import random
import zlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_image
from helpers_delta import HW, Pair, apply_bytes, container_of, resign
from otaguard.crypto.keys import PrivateKey
from otaguard.delta.apply import xor_bytes
from otaguard.delta.format import (
    FLAG_JOINED,
    FLAG_REPEAT,
    DeltaHeader,
    DiffCoding,
    Filter,
    decode_triples,
    encode_header,
    encode_triple,
    encode_triples,
    lzma_filters,
    read_header,
)
from otaguard.delta.predict import Arch
from otaguard.errors import MalformedError, RejectedError

from .test_delta_tamper import zdict_of


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


def _head(delta: bytes) -> DeltaHeader:
    return read_header(io.BytesIO(container_of(delta)), zdict=zdict_of(delta))


def test_checksums_changed_alike_are_coded_as_xor(crc_pair: Pair) -> None:
    delta = crc_pair.delta(chunk_size=1 << 20, zstd=False)
    assert _head(delta).diff_coding is DiffCoding.ZERO_RUNS_XOR
    assert apply_bytes(crc_pair.old, delta, crc_pair.trusted) == crc_pair.new


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_xor_bytes(a: bytes, b: bytes) -> None:
    b = (b * (len(a) // max(1, len(b)) + 1))[: len(a)] if b else bytes(len(a))
    assert xor_bytes(a, b) == bytes(x ^ y for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError):
        xor_bytes(a, a + b"\x00")


def test_xor_coding_with_a_predictor_is_refused(key: PrivateKey, code_pair: Pair) -> None:
    delta = code_pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.THUMB2)
    zdict = zdict_of(delta)
    stream = io.BytesIO(container_of(delta))
    head = read_header(stream, zdict=zdict)
    assert head.predictor is Arch.THUMB2
    forged_head = replace(head, diff_coding=DiffCoding.ZERO_RUNS_XOR)
    forged = resign(key, delta, encode_header(forged_head, zdict) + stream.read())
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
    steps = [(50, 8, 0)] * 50
    assert len(encode_triples(steps, repeat=True)) < len(encode_triples(steps)) // 2


def test_a_repeat_without_a_previous_triple_is_refused(pair: Pair) -> None:
    with pytest.raises(MalformedError, match="previous"):
        decode_triples(b"\x03", repeat=True)
    delta = pair.delta()
    zdict = zdict_of(delta)
    stream = io.BytesIO(container_of(delta))
    head = read_header(stream, zdict=zdict)
    table = stream.read(head.table_length)
    streams = [stream.read(n) for n in (head.control_length, head.diff_length, head.extra_length)]
    control = lzma.compress(
        encode_triple(2 * 5 + 1, 0, 0),  # "repeat" as the very first triple
        format=lzma.FORMAT_RAW,
        filters=lzma_filters(Filter.NONE, head.dict_size),
    )
    forged_head = replace(
        head, flags=(head.flags | FLAG_REPEAT) & ~FLAG_JOINED, control_length=len(control)
    )
    body = encode_header(forged_head, zdict, [table]) + control + b"".join(streams[1:])
    with pytest.raises(MalformedError, match="previous"):
        apply_bytes(pair.old, resign(pair.key, delta, body), pair.trusted)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_xor_and_repeat_containers(crc_pair: Pair, data: st.DataObject) -> None:
    """Any mutation of a delta using XOR coding (and, where chosen, repeated triples) is
    refused cleanly or still rebuilds exactly the image."""
    delta = crc_pair.delta(chunk_size=1 << 20, zstd=False)
    container = bytearray(container_of(delta))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(container) - 1))
        container[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        image = apply_bytes(crc_pair.old, resign(crc_pair.key, delta, bytes(container)), None)
    except RejectedError:
        return
    assert image == crc_pair.new
