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

from helpers import make_image, verify_bytes
from helpers_delta import (
    HW,
    Pair,
    apply_bytes,
    container_of,
    parts_of,
    resign,
    sha_digest,
    zdict_of,
)
from otaguard.delta import open_delta, reconstruct
from otaguard.delta.format import (
    CHUNK_HASH,
    FLAG_FULL,
    FLAG_REPEAT,
    HEAD,
    HEADERS_HASH,
    DeltaHeader,
    DiffCoding,
    Filter,
    decode_triples,
    encode_header,
    encode_triple,
    encode_zero_runs,
    lzma_filters,
    uvarint,
)
from otaguard.delta.predict import Arch
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    PolicyError,
    RejectedError,
    SignatureError,
    TruncatedError,
    UnknownKeyError,
)
from otaguard.image import Digest, HashAlgorithm, PayloadKind
from otaguard.image.envelope_verify import read_protected

#: (header, chunk table entries, [control, diff, extra] streams)
Parts = tuple[DeltaHeader, list[bytes], list[bytes]]


def build(head: DeltaHeader, table: list[bytes], streams: list[bytes], tail: bytes = b"") -> bytes:
    lengths = dict(
        zip(("control_length", "diff_length", "extra_length"), map(len, streams), strict=True)
    )
    return encode_header(replace(head, **lengths), ZDICT[0], table) + b"".join(streams) + tail  # type: ignore[arg-type]


#: The dictionary of the pair's delta (every rebuilt delta keeps its outer metadata).
ZDICT = [b""]


def xz(data: bytes, head: DeltaHeader) -> bytes:
    filters = lzma_filters(Filter.NONE, head.dict_size)
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def unxz(data: bytes, head: DeltaHeader, flt: Filter = Filter.NONE) -> bytes:
    filters = lzma_filters(flt, head.dict_size)
    return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=filters)


def rebuild(pair: Pair, mutate: Callable[[DeltaHeader, list[bytes], list[bytes]], bytes]) -> bytes:
    delta = pair.delta()
    ZDICT[0] = zdict_of(delta)
    head, table, streams = parts_of(container_of(delta), ZDICT[0])
    return resign(pair.key, delta, mutate(head, table, streams))


def new_control(head: DeltaHeader, table: list, streams: list, triples: list) -> bytes:  # type: ignore[type-arg]
    """Replace the control stream (the first chunk runs these triples)."""
    head = replace(head, flags=head.flags & ~FLAG_REPEAT)  # plain triples
    control = xz(b"".join(encode_triple(*t) for t in triples), head)
    return build(head, table, [control, *streams[1:]])


def header_field(**changes: object) -> Callable[..., bytes]:
    return lambda head, table, streams: build(replace(head, **changes), table, streams)


def raw_byte(offset: int, value: int) -> Callable[..., bytes]:
    def mutate(head, table, streams):
        raw = bytearray(build(head, table, streams))
        raw[offset] = value
        return bytes(raw)

    return mutate


def table_entry(index: int, value: bytes) -> Callable[..., bytes]:
    def mutate(head, table, streams):
        table[index] = value
        return build(head, table, streams)

    return mutate


def stream_edit(which: int, fn: Callable[[bytes], bytes]) -> Callable[..., bytes]:
    def mutate(head, table, streams):
        streams[which] = fn(streams[which])
        return build(head, table, streams)

    return mutate


def length_field(**changes: int) -> Callable[..., bytes]:
    """Stream lengths that disagree with the streams that follow."""

    def mutate(head, table, streams):
        return encode_header(replace(head, **changes), ZDICT[0], table) + b"".join(streams)

    return mutate


def _blob_at(head: DeltaHeader) -> int:
    """Offset of the deflated new image header's length (after the fixed fields)."""
    return HEAD.size + len(uvarint(head.base_length)) + HEADERS_HASH


def blob_edit(fn: Callable[[bytes], bytes]) -> Callable[..., bytes]:
    """Edit the deflated new image header (the bytes after the fixed fields and its length)."""

    def mutate(head, table, streams):
        raw = build(head, table, streams)
        start = _blob_at(head)
        length, at = raw[start], start + 1
        assert length < 0x80
        blob = fn(raw[at : at + length])
        assert len(blob) < 0x80
        return raw[:start] + bytes([len(blob)]) + blob + raw[at + length :]

    return mutate


def blob_length(value: int) -> Callable[..., bytes]:
    def mutate(head, table, streams):
        raw = bytearray(build(head, table, streams))
        raw[_blob_at(head)] = value
        return bytes(raw)

    return mutate


def headers_digest_flipped(head, table, streams):
    raw = bytearray(build(head, table, streams))
    raw[_blob_at(head) - 1] ^= 1
    return bytes(raw)


def _control_of(pair: Pair) -> list[tuple[int, int, int]]:
    delta = pair.delta()
    head, _table, streams = parts_of(container_of(delta), zdict_of(delta))
    return decode_triples(unxz(streams[0], head), head.repeat)


def _full_reading_old(head, table, streams):
    return build(replace(head, flags=FLAG_FULL), table, [streams[0], b"", streams[2]])


CASES: dict[str, tuple[Callable[..., bytes], type[RejectedError]]] = {
    "bad magic": (lambda h, t, c: b"X" + build(h, t, c)[1:], MalformedError),
    "version 2": (raw_byte(4, 2), MalformedError),
    "version 3 (8-byte chunk hashes)": (raw_byte(4, 3), MalformedError),
    "unknown flag": (header_field(flags=0x80), MalformedError),
    "chunk size too small": (raw_byte(6, 11), MalformedError),
    "chunk size too large": (raw_byte(6, 24), MalformedError),
    "chunk size absurd": (raw_byte(6, 255), MalformedError),
    "base length too large": (header_field(base_length=1 << 60), MalformedError),
    "unknown filter": (raw_byte(7, 9), MalformedError),
    "unknown diff coding": (raw_byte(8, 3), MalformedError),
    "dictionary larger than a chunk": (raw_byte(9, 23), MalformedError),
    "dictionary too small": (raw_byte(9, 15), MalformedError),
    "unknown predictor": (raw_byte(10, 3), MalformedError),
    "predictor phase out of range": (raw_byte(10, 0x41), MalformedError),
    "phase without a predictor": (raw_byte(10, 0x10), MalformedError),
    "predictor on a multi-chunk image": (header_field(predictor=Arch.X86_64), MalformedError),
    "new header cut": (header_field(new_signed=b"OTAGUARD"), MalformedError),
    "new signature block empty": (header_field(new_signatures=b""), MalformedError),
    "new header blob corrupt": (blob_edit(lambda b: bytes([b[0] ^ 0xFF]) + b[1:]), RejectedError),
    "new header blob cut": (blob_edit(lambda b: b[:-2]), MalformedError),
    "new header blob with trailing bytes": (blob_edit(lambda b: b + b"\x00"), MalformedError),
    "new header blob huge": (blob_length(0xFF), MalformedError),
    "new header digest": (headers_digest_flipped, DigestMismatchError),
    "full flag over a diff stream": (header_field(flags=FLAG_FULL), MalformedError),
    "full flag over triples reading the old image": (_full_reading_old, MalformedError),
    "output hash of the first chunk": (table_entry(0, bytes(CHUNK_HASH)), DigestMismatchError),
    "output hash of a middle chunk": (table_entry(2, bytes(CHUNK_HASH)), DigestMismatchError),
    "chunk table cut": (lambda h, t, c: build(h, t[:-1], c), MalformedError),
    "stream lengths past the container": (length_field(extra_length=1 << 30), TruncatedError),
    "stream lengths short of the container": (length_field(control_length=1), MalformedError),
    "trailing bytes after the streams": (lambda h, t, c: build(h, t, c, b"\x00"), MalformedError),
    "container cut inside a stream": (lambda h, t, c: build(h, t, c)[:-3], TruncatedError),
    "container cut inside its header": (lambda h, t, c: build(h, t, c)[:70], TruncatedError),
    "corrupt diff stream": (
        stream_edit(1, lambda s: s[:2] + bytes([s[2] ^ 0xFF]) + s[3:]),
        MalformedError,
    ),
    "short diff stream": (stream_edit(1, lambda s: b""), MalformedError),
    "diff stream with trailing bytes": (stream_edit(1, lambda s: s + b"\x00"), MalformedError),
    "control stream cut": (stream_edit(0, lambda s: s[: len(s) // 2]), MalformedError),
    "extra stream with trailing bytes": (stream_edit(2, lambda s: s + b"\x00"), MalformedError),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampered_container_is_refused(pair: Pair, name: str) -> None:
    mutate, error = CASES[name]
    delta = rebuild(pair, mutate)
    with pytest.raises(error):
        apply_bytes(pair.old, delta, pair.trusted)


def test_the_pair_has_several_chunks_and_both_kinds_of_step(pair: Pair) -> None:
    """The cases above rely on it: a chunk table, and triples that read and copy."""
    delta = pair.delta()
    head, table, _streams = parts_of(container_of(delta), zdict_of(delta))
    assert head.chunk_count >= 4 and len(table) == head.chunk_count - 1
    triples = _control_of(pair)
    assert any(a for a, _c, _s in triples) and any(c for _a, c, _s in triples)


def test_old_image_changing_after_the_base_check_is_caught_at_its_chunk(pair: Pair) -> None:
    """The base is hashed whole first; a later read that differs fails its chunk's output hash.

    (An output byte is the old byte plus a signed diff byte, so a chunk's output hash
    also proves the old bytes it read: no separate source hash is needed.)
    """
    delta = pair.delta()
    stream = io.BytesIO(delta)
    opened = open_delta(stream, pair.trusted)
    reads = []
    changed = bytearray(pair.old)
    for i in range(200, len(changed), 50):
        changed[i] ^= 1

    def read_at(offset: int, n: int) -> bytes:
        reads.append(offset)
        data = pair.old if len(reads) <= len(pair.old) // (1 << 20) + 1 else changed
        return bytes(data[offset : offset + n])

    image = reconstruct(opened, stream, len(pair.old), read_at)
    out = io.BytesIO()
    with pytest.raises(DigestMismatchError, match="chunk 0"):
        image.readall_into(out)
    assert len(out.getvalue()) < len(pair.new) - len(opened.header.new_signatures)


@pytest.mark.parametrize(
    "triples",
    [
        pytest.param([(10**9, 0, 0)], id="runs past the chunk"),
        pytest.param([(0, 0, 1)] * 5000, id="too many triples"),
        pytest.param([(0, 0, 0)] * 5000, id="empty triples forever"),
        pytest.param([(0, 0, -100), (100, 0, 0)], id="reads before the old image"),
        pytest.param([(0, 0, 10**7), (100, 0, 0)], id="reads past the old image"),
        pytest.param([(1 << 63, 0, 0)], id="huge add"),
    ],
)
def test_hostile_control_triples_are_refused(
    pair: Pair, triples: list[tuple[int, int, int]]
) -> None:
    delta = rebuild(pair, lambda h, t, c: new_control(h, t, c, triples))
    with pytest.raises(MalformedError):
        apply_bytes(pair.old, delta, pair.trusted)


def _chunk_adds(pair: Pair) -> list[int]:
    """Old bytes each chunk reads (so, its diff length)."""
    delta = pair.delta()
    head, _table, _streams = parts_of(container_of(delta), zdict_of(delta))
    adds = [0] * head.chunk_count
    index = produced = 0
    for add, copy, _seek in _control_of(pair):
        adds[index] += add
        produced += add + copy
        if produced == head.chunk_length(index):
            index, produced = index + 1, 0
    return adds


def _zrle_diff(records: bytes) -> Callable[..., bytes]:
    """The delta with ZERO_RUNS coding and ``records`` as its (decompressed) diff stream."""

    def mutate(head, table, streams):
        head = replace(head, diff_coding=DiffCoding.ZERO_RUNS)
        return build(head, table, [streams[0], xz(records, head), streams[2]])

    return mutate


def _uvarint_at(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _chunk_diffs(pair: Pair) -> list[bytes]:
    """Each chunk's diff bytes, decoded from the pair's delta (plain or zero-run coded)."""
    delta = pair.delta()
    head, _table, streams = parts_of(container_of(delta), zdict_of(delta))
    raw = unxz(streams[1], head) if streams[1] else b""
    out, pos = [], 0
    for n in _chunk_adds(pair):
        if head.diff_coding is DiffCoding.PLAIN:
            out.append(raw[pos : pos + n])
            pos += n
            continue
        chunk = bytearray()
        while len(chunk) < n:
            literal, pos = _uvarint_at(raw, pos)
            chunk += raw[pos : pos + literal]
            zeros, pos = _uvarint_at(raw, pos + literal)
            chunk += bytes(zeros)
        out.append(bytes(chunk))
    assert pos == len(raw)
    return out


def _records(pair: Pair) -> bytes:
    return b"".join(encode_zero_runs(d) for d in _chunk_diffs(pair))


def test_zero_run_records_decode_as_the_diff(pair: Pair) -> None:
    delta = rebuild(pair, _zrle_diff(_records(pair)))
    assert apply_bytes(pair.old, delta, pair.trusted) == pair.new


def test_plain_diff_decodes_as_the_diff(pair: Pair) -> None:
    def mutate(head, table, streams):
        head = replace(head, diff_coding=DiffCoding.PLAIN)
        diff = b"".join(_chunk_diffs(pair))
        return build(head, table, [streams[0], xz(diff, head) if diff else b"", streams[2]])

    assert apply_bytes(pair.old, rebuild(pair, mutate), pair.trusted) == pair.new


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
    records = _records(pair) + b"\x00\x00"
    with pytest.raises(MalformedError):
        apply_bytes(pair.old, rebuild(pair, _zrle_diff(records)), pair.trusted)


def test_zero_run_records_may_not_cross_a_chunk(pair: Pair) -> None:
    records = encode_zero_runs(b"".join(_chunk_diffs(pair)))  # records across chunks
    with pytest.raises(MalformedError, match="longer than its chunk"):
        apply_bytes(pair.old, rebuild(pair, _zrle_diff(records)), pair.trusted)


def test_overlong_control_varint_is_refused(pair: Pair) -> None:
    def mutate(head, table, streams):
        return build(head, table, [xz(b"\xff" * 11 + b"\x01", head), *streams[1:]])

    with pytest.raises(MalformedError, match="varint"):
        apply_bytes(pair.old, rebuild(pair, mutate), pair.trusted)


@given(st.integers(0, 2**32), st.integers(0, 2**32), st.integers(-(2**62), 2**62))
def test_triples_round_trip(add: int, copy: int, seek: int) -> None:
    assert decode_triples(encode_triple(add, copy, seek) * 2) == [(add, copy, seek)] * 2


def test_control_triples_are_what_the_encoder_wrote(pair: Pair) -> None:
    triples = _control_of(pair)
    _signed, meta = read_protected(io.BytesIO(pair.new))
    assert sum(a + c for a, c, _s in triples) == meta.payload_length
    seeks_only = [t for t in triples if not t[0] + t[1]]
    assert len(seeks_only) <= len(_chunk_adds(pair))  # only a chunk's first triple may only seek


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


def test_the_signed_base_is_the_one_checked(pair: Pair) -> None:
    delta = pair.delta()
    forged = resign(pair.key, delta, container_of(delta), delta_base=sha_digest(bytes(32)))
    with pytest.raises(DigestMismatchError, match="base"):
        apply_bytes(pair.old, forged, pair.trusted)
    forged = resign(
        pair.key,
        delta,
        container_of(delta),
        delta_base=Digest(HashAlgorithm.SHA512, hashlib.sha512(pair.old).digest()),
    )
    with pytest.raises(MalformedError, match="base"):
        apply_bytes(pair.old, forged, pair.trusted)


def test_outer_metadata_must_match_the_image(pair: Pair) -> None:
    """Re-signed with other metadata: the header predicted from it (the deflate dictionary)
    changes too, so the rebuilt header either differs from the envelope or is not the one
    the release keys signed -- refused either way, and unsigned, by the header digest."""
    delta = pair.delta()
    for override in ({"version": "9.9.9"}, {"security_counter": 99}, {"hardware_ids": ("other",)}):
        forged = resign(pair.key, delta, container_of(delta), **override)
        with pytest.raises((MalformedError, SignatureError, DigestMismatchError)):
            apply_bytes(pair.old, forged, pair.trusted)
        with pytest.raises((MalformedError, DigestMismatchError)):
            apply_bytes(pair.old, forged, None)


def test_unauthenticated_apply_still_checks_the_payload_digest(pair: Pair) -> None:
    delta = bytearray(pair.delta())
    signed, meta = read_protected(io.BytesIO(bytes(delta)))
    delta[len(signed) + meta.payload_length - 1] ^= 1  # the container's last byte
    with pytest.raises(DigestMismatchError, match="payload"):
        apply_bytes(pair.old, bytes(delta), None)


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
    def mutate(head, table, streams):
        sigs = bytearray(head.new_signatures)
        sigs[-1] ^= 1
        return build(replace(head, new_signatures=bytes(sigs)), table, streams)

    delta = rebuild(pair, mutate)
    with pytest.raises(SignatureError):
        apply_bytes(pair.old, delta, pair.trusted)
    # unauthenticated (no trusted key) checks no signature, as documented: whoever made the
    # delta made the image, so what comes out must be verified -- and is refused there
    rebuilt = apply_bytes(pair.old, delta, None)
    with pytest.raises(SignatureError):
        verify_bytes(rebuilt, [pair.key])


def test_inner_image_must_be_full_and_of_the_right_length(pair: Pair) -> None:
    def swap_header(new_header: bytes) -> Callable[..., bytes]:
        return lambda h, t, c: build(replace(h, new_signed=new_header), t, c)

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
    delta = pair.delta()
    opened = open_delta(io.BytesIO(delta), pair.trusted)
    assert opened.header.base_sha256 == hashlib.sha256(pair.old).digest()
    assert opened.outer.delta_base == sha_digest(hashlib.sha256(pair.old).digest())
    _signed, new_meta = read_protected(io.BytesIO(pair.new))
    assert opened.header.payload_digest == new_meta.payload_digest
    head, _table, _streams = parts_of(container_of(delta), zdict_of(delta))
    assert head.target_length == len(pair.new)


def test_new_header_is_carried_compactly(pair: Pair) -> None:
    """The new image's header and signature block cost little more than their digest and
    signature: the rest is predicted from the delta's own envelope."""
    delta = pair.delta()
    head, _table, _streams = parts_of(container_of(delta), zdict_of(delta))
    raw = len(head.new_signed) + len(head.new_signatures)
    packed = container_of(delta)[_blob_at(head)]
    assert packed < 32 + 64 + 40 < raw, (packed, raw)
