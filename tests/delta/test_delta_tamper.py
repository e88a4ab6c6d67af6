"""Every check that can refuse a delta, each shown refusing (and writing nothing)."""

from __future__ import annotations

import hashlib
import io
import lzma
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import make_image
from helpers_delta import HW, Pair, apply_bytes, container_of, resign, sha_digest
from otaguard.delta.format import (
    FLAG_FULL,
    ChunkHead,
    DeltaHeader,
    Filter,
    Method,
    decode_triples,
    dict_size_for,
    encode_chunk_head,
    encode_header,
    encode_triple,
    encode_zero_runs,
    lzma_filters,
    read_chunk_head,
    read_header,
)
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    PolicyError,
    RejectedError,
    SignatureError,
    TruncatedError,
    UnknownKeyError,
)
from otaguard.image import PayloadKind

Parts = tuple[DeltaHeader, list[tuple[ChunkHead, bytes]]]


def parse(container: bytes) -> Parts:
    stream = io.BytesIO(container)
    head = read_header(stream)
    chunks = []
    for index in range(head.chunk_count):
        chunk = read_chunk_head(stream, head, index)
        chunks.append((chunk, stream.read(chunk.body_length)))
    assert not stream.read()
    return head, chunks


def build(head: DeltaHeader, chunks: list[tuple[ChunkHead, bytes]], tail: bytes = b"") -> bytes:
    out = [encode_header(head)]
    for chunk, body in chunks:
        out += [encode_chunk_head(chunk), body]
    return b"".join(out) + tail


def xz(data: bytes, head: DeltaHeader) -> bytes:
    filters = lzma_filters(Filter.NONE, dict_size_for(head.chunk_size))
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def streams(chunk: ChunkHead, body: bytes) -> list[bytes]:
    c, d = chunk.control_length, chunk.diff_length
    return [body[:c], body[c : c + d], body[c + d :]]


def rebuild(
    pair: Pair, mutate: Callable[[DeltaHeader, list[tuple[ChunkHead, bytes]]], bytes]
) -> bytes:
    delta = pair.delta()
    head, chunks = parse(container_of(delta))
    return resign(pair.key, delta, mutate(head, chunks))


def bsdiff_chunk(chunks: list[tuple[ChunkHead, bytes]]) -> int:
    return next(i for i, (c, _b) in enumerate(chunks) if c.method is not Method.LITERAL)


def new_control(head: DeltaHeader, chunks: list, triples: list[tuple[int, int, int]]) -> bytes:  # type: ignore[type-arg]
    """Replace the first bsdiff chunk's control stream (its other streams kept)."""
    i = bsdiff_chunk(chunks)
    chunk, body = chunks[i]
    _c, d, e = streams(chunk, body)
    control = xz(b"".join(encode_triple(*t) for t in triples), head)
    chunks[i] = (replace(chunk, control_length=len(control)), control + d + e)
    return build(head, chunks)


def header_field(**changes: object) -> Callable[..., bytes]:
    return lambda head, chunks: build(replace(head, **changes), chunks)


def chunk_field(index: int = 0, **changes: object) -> Callable[..., bytes]:
    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        chunk, body = chunks[index]
        chunks[index] = (replace(chunk, **changes), body)
        return build(head, chunks)

    return mutate


def raw_chunk_byte(offset: int, value: int) -> Callable[..., bytes]:
    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        raw = bytearray(build(head, chunks))
        raw[len(encode_header(head)) + offset] = value
        return bytes(raw)

    return mutate


def stream_edit(which: int, fn: Callable[[bytes], bytes]) -> Callable[..., bytes]:
    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        i = bsdiff_chunk(chunks)
        chunk, body = chunks[i]
        parts = streams(chunk, body)
        parts[which] = fn(parts[which])
        lengths = dict(
            zip(("control_length", "diff_length", "extra_length"), map(len, parts), strict=True)
        )
        chunks[i] = (replace(chunk, **lengths), b"".join(parts))
        return build(head, chunks)

    return mutate


def _control_of(pair: Pair) -> list[tuple[int, int, int]]:
    head, chunks = parse(container_of(pair.delta()))
    chunk, body = chunks[bsdiff_chunk(chunks)]
    raw = lzma.decompress(
        streams(chunk, body)[0],
        format=lzma.FORMAT_RAW,
        filters=lzma_filters(Filter.NONE, dict_size_for(head.chunk_size)),
    )
    return decode_triples(raw)


CASES: dict[str, tuple[Callable[..., bytes], type[RejectedError]]] = {
    "bad magic": (lambda h, c: b"X" + build(h, c)[1:], MalformedError),
    "version": (lambda h, c: build(h, c)[:8] + b"\x00\x02" + build(h, c)[10:], MalformedError),
    "unknown flag": (header_field(flags=0x8000), MalformedError),
    "chunk size not a power of two": (header_field(chunk_size=5000), MalformedError),
    "chunk size too large": (header_field(chunk_size=1 << 24), MalformedError),
    "target length too small": (header_field(target_length=10), MalformedError),
    "chunk count": (header_field(chunk_count=1), MalformedError),
    "huge chunk count": (header_field(chunk_count=1 << 30), MalformedError),
    "new header cut": (header_field(new_signed=b"OTAGUARD"), MalformedError),
    "new signature block empty": (header_field(new_signatures=b""), MalformedError),
    "target digest": (header_field(target_sha256=bytes(32)), DigestMismatchError),
    "full flag over bsdiff chunks": (header_field(flags=FLAG_FULL), MalformedError),
    "unknown method": (raw_chunk_byte(0, 7), MalformedError),
    "unknown filter": (raw_chunk_byte(1, 9), MalformedError),
    "reserved": (raw_chunk_byte(2, 1), MalformedError),
    "output length": (chunk_field(out_length=17), MalformedError),
    "output hash": (chunk_field(out_sha256=bytes(32)), DigestMismatchError),
    "source hash": (chunk_field(src_sha256=bytes(32)), DigestMismatchError),
    "stream length cap": (chunk_field(extra_length=1 << 30), MalformedError),
    "chunk runs past the payload": (chunk_field(-1, extra_length=4000), TruncatedError),
    "trailing bytes after the last chunk": (lambda h, c: build(h, c, b"\x00"), MalformedError),
    "container cut inside a chunk": (lambda h, c: build(h, c)[:-3], TruncatedError),
    "container cut inside its header": (lambda h, c: build(h, c)[:60], TruncatedError),
    "literal with control data": (
        lambda h, c: build(h, [(replace(c[0][0], method=Method.LITERAL), c[0][1]), *c[1:]]),
        MalformedError,
    ),
    "corrupt diff stream": (
        stream_edit(1, lambda s: s[:2] + bytes([s[2] ^ 0xFF]) + s[3:]),
        MalformedError,
    ),
    "short diff stream": (stream_edit(1, lambda s: b""), MalformedError),
    "diff stream with trailing bytes": (stream_edit(1, lambda s: s + b"\x00"), MalformedError),
    "control stream cut": (stream_edit(0, lambda s: s[: len(s) // 2]), MalformedError),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampered_container_is_refused(pair: Pair, name: str) -> None:
    mutate, error = CASES[name]
    delta = rebuild(pair, mutate)
    with pytest.raises(error):
        apply_bytes(pair.old, delta, pair.trusted)


@pytest.mark.parametrize(
    "triples",
    [
        pytest.param([(10**9, 0, 0)], id="runs past the chunk"),
        pytest.param([(10, 0, 0)] * 5000, id="too many triples"),
        pytest.param([(0, 0, 0)] * 5000, id="empty triples forever"),
        pytest.param([(0, 0, -100), (100, 0, 0)], id="reads before the old image"),
        pytest.param([(0, 0, 10**7), (100, 0, 0)], id="reads past the old image"),
        pytest.param([(1 << 63, 0, 0)], id="huge add"),
    ],
)
def test_hostile_control_triples_are_refused(
    pair: Pair, triples: list[tuple[int, int, int]]
) -> None:
    delta = rebuild(pair, lambda h, c: new_control(h, c, triples))
    with pytest.raises(MalformedError):
        apply_bytes(pair.old, delta, pair.trusted)


def _zrle_diff(records: bytes) -> Callable[..., bytes]:
    """The first bsdiff chunk as BSDIFF_ZRLE with ``records`` as its (decompressed) diff."""

    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        i = bsdiff_chunk(chunks)
        chunk, body = chunks[i]
        c, _d, e = streams(chunk, body)
        diff = xz(records, head)
        chunks[i] = (
            replace(chunk, method=Method.BSDIFF_ZRLE, diff_length=len(diff)),
            c + diff + e,
        )
        return build(head, chunks)

    return mutate


def _adds(pair: Pair) -> int:
    return sum(a for a, _c, _s in _control_of(pair))


def test_zero_run_records_decode_as_zeros(pair: Pair) -> None:
    # the pair's matches are exact (its edits land in extra), so an all-zero diff rebuilds it
    delta = rebuild(pair, _zrle_diff(encode_zero_runs(bytes(_adds(pair)))))
    assert apply_bytes(pair.old, delta, pair.trusted) == pair.new


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(b"\x00\x00" * 100_000, id="empty records forever"),
        pytest.param(b"\x00\xff\xff\xff\xff\x0f", id="zero run past the chunk"),
        pytest.param(b"\x05ab", id="literal cut short"),
        pytest.param(b"\xff" * 11, id="overlong varint"),
    ],
)
def test_hostile_zero_run_records_are_refused(pair: Pair, records: bytes) -> None:
    with pytest.raises(MalformedError):
        apply_bytes(pair.old, rebuild(pair, _zrle_diff(records)), pair.trusted)


def test_zero_run_records_with_trailing_bytes_are_refused(pair: Pair) -> None:
    records = encode_zero_runs(bytes(_adds(pair))) + b"\x00\x00"
    with pytest.raises(MalformedError):
        apply_bytes(pair.old, rebuild(pair, _zrle_diff(records)), pair.trusted)


def test_overlong_control_varint_is_refused(pair: Pair) -> None:
    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        i = bsdiff_chunk(chunks)
        chunk, body = chunks[i]
        _c, d, e = streams(chunk, body)
        control = xz(b"\xff" * 11 + b"\x01", head)
        chunks[i] = (replace(chunk, control_length=len(control)), control + d + e)
        return build(head, chunks)

    with pytest.raises(MalformedError, match="varint"):
        apply_bytes(pair.old, rebuild(pair, mutate), pair.trusted)


@given(st.integers(0, 2**32), st.integers(0, 2**32), st.integers(-(2**62), 2**62))
def test_triples_round_trip(add: int, copy: int, seek: int) -> None:
    assert decode_triples(encode_triple(add, copy, seek) * 2) == [(add, copy, seek)] * 2


def test_control_triples_are_what_the_encoder_wrote(pair: Pair) -> None:
    triples = _control_of(pair)
    assert triples and all(a + c > 0 for a, c, _s in triples[1:])  # the first may only seek


def test_wrong_base_is_refused_before_any_output(pair: Pair) -> None:
    other = make_image(
        b"another" * 3000, [pair.key], version="1.3.0", security_counter=6, hardware_ids=(HW,)
    )
    with pytest.raises(DigestMismatchError, match="base"):
        apply_bytes(other, pair.delta(), pair.trusted)
    same_length = bytearray(pair.old)
    same_length[-100] ^= 1
    with pytest.raises(DigestMismatchError, match="base"):
        apply_bytes(bytes(same_length), pair.delta(), pair.trusted)


def test_signed_base_and_container_base_must_agree(pair: Pair) -> None:
    delta = pair.delta()
    forged = resign(pair.key, delta, container_of(delta), delta_base=sha_digest(bytes(32)))
    with pytest.raises(MalformedError, match="base"):
        apply_bytes(pair.old, forged, pair.trusted)


def test_outer_metadata_must_match_the_image(pair: Pair) -> None:
    delta = pair.delta()
    for override in ({"version": "9.9.9"}, {"security_counter": 99}, {"hardware_ids": ("other",)}):
        forged = resign(pair.key, delta, container_of(delta), **override)
        with pytest.raises(MalformedError, match="differ"):
            apply_bytes(pair.old, forged, pair.trusted)


def test_a_full_image_is_not_a_delta(pair: Pair) -> None:
    with pytest.raises(PolicyError):
        apply_bytes(pair.old, pair.new, pair.trusted)
    with pytest.raises(PolicyError):
        apply_bytes(pair.old, pair.new, None)


def test_outer_signature_is_checked(pair: Pair) -> None:
    delta = bytearray(pair.delta())
    delta[-5] ^= 1
    with pytest.raises(SignatureError):
        apply_bytes(pair.old, bytes(delta), pair.trusted)


def test_untrusted_signer_is_refused(pair: Pair) -> None:
    from helpers import cached_key
    from otaguard.crypto.keys import KeyType
    from otaguard.image import TrustedKeys

    other = TrustedKeys.of([cached_key(KeyType.ED25519, 1).public_key()])
    with pytest.raises(UnknownKeyError):
        apply_bytes(pair.old, pair.delta(), other)


def test_inner_signature_is_checked_before_anything(pair: Pair) -> None:
    def mutate(head, chunks):  # type: ignore[no-untyped-def]
        sigs = bytearray(head.new_signatures)
        sigs[-1] ^= 1
        return build(replace(head, new_signatures=bytes(sigs)), chunks)

    delta = rebuild(pair, mutate)
    with pytest.raises(SignatureError):
        apply_bytes(pair.old, delta, pair.trusted)
    with pytest.raises(DigestMismatchError):  # unauthenticated: the target digest still binds it
        apply_bytes(pair.old, delta, None)


def test_inner_image_must_be_full_and_of_the_right_length(pair: Pair) -> None:
    def swap_header(new_header: bytes) -> Callable[..., bytes]:
        return lambda h, c: build(replace(h, new_signed=new_header), c)

    inner_delta = make_image(
        b"x" * 64,
        [pair.key],
        version="1.5.0",
        security_counter=8,
        hardware_ids=(HW,),
        payload_kind=PayloadKind.DELTA,
        delta_base=sha_digest(bytes(32)),
    )
    other_len = make_image(
        b"x" * 64, [pair.key], version="1.5.0", security_counter=8, hardware_ids=(HW,)
    )
    for image in (inner_delta, other_len):
        header = image[: 16 + struct.unpack(">I", image[12:16])[0]]
        delta = rebuild(pair, swap_header(header))
        with pytest.raises(MalformedError):
            apply_bytes(pair.old, delta, pair.trusted)


def test_every_prefix_of_a_delta_is_refused(pair: Pair) -> None:
    delta = pair.delta()
    for cut in range(0, len(delta), max(1, len(delta) // 150)):
        with pytest.raises(RejectedError):
            apply_bytes(pair.old, delta[:cut], None)


def test_base_digest_is_the_sha256_of_the_old_file(pair: Pair) -> None:
    head, _chunks = parse(container_of(pair.delta()))
    assert head.base_sha256 == hashlib.sha256(pair.old).digest()
    assert head.target_sha256 == hashlib.sha256(pair.new).digest()
