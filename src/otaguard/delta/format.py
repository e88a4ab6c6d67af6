"""The delta container: wire format, encoding and strict parsing.

The container is the payload of a signed envelope of kind DELTA (layout byte by
byte in ``docs/delta.md``). Integers are big-endian unless noted::

    magic "OTAD" | u8 version (3) | u8 flags | u8 log2 of the chunk size
    u8 extra filter | u8 diff coding | u8 log2 of the LZMA2 dictionary | u8 predictor
    varint base length
    [predictor bit 7: u8 pointer width | varint lo | varint hi | zigzag old, new bias]
    16 bytes: SHA-256 of the new image's header + signature block, first 16 bytes
    varint M | M bytes: the new image's header + signature block, raw deflate
    varint control length | varint diff length | varint extra length
    (N - 1) x 4: output SHA-256 of every chunk but the last, first 4 bytes
    control stream | diff stream | extra stream   -- shared by all chunks, to the end
                                                  -- (FLAG_JOINED: one stream of all three)

The new image's header and signature block are deflated with a preset
dictionary predicted from the signed delta envelope (its version, counter,
hardware ids and creation time, and its signers' key ids), so that only what
differs -- payload length and digest, signatures -- costs bytes. The base
digest is the envelope's signed ``DELTA_BASE``; it is not repeated here, and
neither is a digest of the new image: its header's ``PAYLOAD_DIGEST`` is the
target the rebuilt payload must hash to.

Everything here is unverified; ``apply`` decides. Every length is capped before
it is used, so a hostile container cannot make the applier allocate without
bound.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from otaguard.delta.predict import Absolute, Arch
from otaguard.errors import DigestMismatchError, MalformedError, TruncatedError
from otaguard.image.envelope_format import (
    MAX_HEADER_SIZE,
    MAX_SIG_BLOCK_SIZE,
    PREAMBLE_SIZE,
    Digest,
    HashAlgorithm,
    ImageMetadata,
    encode_protected,
    parse_protected,
)

MAGIC = b"OTAD"
FORMAT_VERSION = 4
#: flags bit 0: no chunk reads the old image (the "compressed full image" fallback).
FLAG_FULL = 0x0001
#: flags bit 1: the new payload is one zstd frame (in the extra stream's place) with the whole
#: old image as its raw-content dictionary; no control or diff stream. Only for small images:
#: old image and new payload together at most one chunk.
FLAG_ZSTD = 0x0002
#: flags bit 2: one LZMA2 stream holds control, diff and extra bytes back to back (three
#: streams' framing costs ~30 bytes: a tenth of a small firmware fix). Decoded whole, so at
#: most MAX_PREDICTED bytes of streams (any number of chunks); the control and diff lengths
#: are then raw lengths, the extra length the joined stream's.
FLAG_JOINED = 0x0004
#: flags bit 3: control triples whose ``add`` field is ``2 * add + r``: r = 1 means this
#: triple's copy and seek are the previous triple's (across chunks) and are not sent.
FLAG_REPEAT = 0x0008
_KNOWN_FLAGS = FLAG_FULL | FLAG_ZSTD | FLAG_JOINED | FLAG_REPEAT

HEAD = struct.Struct(">4sBBBBBBB")
#: Size of the digest of the new image's header + signature block (SHA-256, cut to 128 bits).
HEADERS_HASH = 16
#: Size of one entry of the chunk table: an output SHA-256 cut to 32 bits. It is an early
#: failure check and a resume point, not the security check: the container is signed, the
#: old image hashed whole before any write, and the whole payload's full digest is checked
#: before anything can boot. A corrupt chunk slips past it once in 2^32 and is then caught
#: by that digest; 4 bytes per 4 MiB chunk (a rootfs tar's table: 44 bytes).
CHUNK_HASH = 4
#: A varint is at most 10 bytes (64 bits, 7 per byte).
MAX_VARINT = 10

MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 23  # 8 MiB: keeps the applier under its memory bound
DEFAULT_CHUNK_SIZE = 1 << 22  # 4 MiB
MAX_IMAGE_LENGTH = 1 << 48
#: A predicted delta's old image + new payload, at most (the applier holds the old image and
#: one predicted range: at most this much on top of its decoders, whatever the chunk size).
MAX_PREDICTED = 1 << 22
#: A joined stream is read whole: its compressed length is capped too (LZMA2 expands
#: incompressible data by well under 64 KiB per 4 MiB).
MAX_JOINED_STREAM = MAX_PREDICTED + (1 << 16)
MAX_CHUNKS = 1 << 24
MIN_DICT_LOG = 16  # 64 KiB
#: The new image's preamble + protected header + signature block, decompressed.
MAX_NEW_HEADERS = PREAMBLE_SIZE + MAX_HEADER_SIZE + MAX_SIG_BLOCK_SIZE


def max_triples(out_len: int) -> int:
    """Most control triples a chunk may have (a pure seek first, then >= 1 byte each)."""
    return out_len + 1


def encode_triple(add: int, copy: int, seek: int) -> bytes:
    """One control triple: LEB128 ``add`` and ``copy``, zigzag LEB128 ``seek``."""
    return b"".join(
        (
            uvarint(add & (1 << 64) - 1),
            uvarint(copy),
            uvarint(((seek << 1) ^ (seek >> 63)) & (1 << 64) - 1),
        )
    )


def decode_varint(next_byte: Callable[[], int]) -> int:
    """Read one LEB128 value of at most 64 bits (MalformedError if longer)."""
    value = 0
    for i in range(MAX_VARINT):
        byte = next_byte()
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 64:
                break
            return value
    raise MalformedError("delta: a varint is longer than 64 bits")


def encode_zero_runs(diff: bytes, min_run: int = 8) -> bytes:
    """Records ``uvarint literal length | literal | uvarint zero run``; no empty last record.

    Zero runs shorter than ``min_run`` stay literal (the decoder takes any split).
    One ``re.split`` cuts literals and runs apart and the lengths are looked up in a
    table (a loop per run took 0.2 s per MiB of a dense diff).
    """
    zeros = _ZEROS.get(min_run) or _ZEROS.setdefault(min_run, re.compile(rb"(\x00{%d,})" % min_run))
    parts = zeros.split(diff)  # literal, run, literal, run, ..., last literal
    table = (_UVARINTS or _uvarint_table()) if len(parts) > _TABLE_FROM else []
    limit = len(table)
    lengths = [table[n] if n < limit else uvarint(n) for n in map(len, parts)]
    lengths.append(b"\x00")  # the last record's zero run
    records = len(lengths) // 2
    out = [b""] * (3 * records)
    out[0::3] = lengths[0::2]  # literal lengths
    out[1::3] = parts[0::2]  # literals
    out[2::3] = lengths[1::2]  # zero-run lengths
    if not parts[-1]:
        del out[-3:]  # no empty last record
    return b"".join(out)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: ``uvarint(n)`` for every n below 2**14, built on first use (~3 ms: a firmware image's
#: few runs are cheaper without it; only diffs with more than _TABLE_FROM pieces use it).
_UVARINTS: list[bytes] = []
_TABLE_FROM = 4096


def _uvarint_table() -> list[bytes]:
    low = [bytes((n | 0x80,)) for n in range(0x80)]  # n = 128 * high + low, high first
    two = [byte + bytes((high,)) for high in range(1, 0x80) for byte in low]
    _UVARINTS[:] = [bytes((n,)) for n in range(0x80)] + two
    return _UVARINTS


_ZEROS: dict[int, re.Pattern[bytes]] = {}


def unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


#: FLAG_REPEAT's predicted edits: the context is this many old bytes before the previous
#: step's edit point (where its add ended), looked for at most EDIT_WINDOW bytes ahead.
EDIT_CONTEXT = 4
EDIT_WINDOW = 1 << 16


def next_edit(read_at: Callable[[int, int], bytes], edit_point: int, old_pos: int) -> int | None:
    """The ``add`` that reaches, from ``old_pos``, the end of the next EDIT_CONTEXT old bytes
    equal to those before ``edit_point``: where the same edit would go next (None: nowhere
    within EDIT_WINDOW). The tar's ``def `` -> ``def release_``, 152 times: a bit each."""
    if edit_point < EDIT_CONTEXT or old_pos < 0:
        return None
    context = read_at(edit_point - EDIT_CONTEXT, EDIT_CONTEXT)
    if len(context) != EDIT_CONTEXT:
        return None
    at = read_at(old_pos, EDIT_WINDOW).find(context)
    return None if at < 0 else at + EDIT_CONTEXT


def encode_triples(
    triples: Sequence[tuple[int, int, int]],
    repeat: bool = False,
    read_at: Callable[[int, int], bytes] | None = None,
) -> bytes:
    """A control stream. With ``repeat`` (FLAG_REPEAT) each triple starts ``4 * add + r``:
    r = 0, copy and seek follow; r = 1, they are the previous triple's; r = 2 (and add 0),
    they are the previous triple's and ``add`` is :func:`next_edit`'s (``read_at`` reads the
    old image; without it r = 2 is not used)."""
    if not repeat:
        return b"".join(encode_triple(*t) for t in triples)
    out = []
    previous = None
    old = 0
    edit_point = -1
    for add, copy, seek in triples:
        if (copy, seek) == previous:
            predicted = next_edit(read_at, edit_point, old) if read_at else None
            out.append(uvarint(2 if predicted == add else 4 * add + 1))
        else:
            out.append(encode_triple(4 * add, copy, seek))
        previous = (copy, seek)
        edit_point = old + add
        old += add + seek
    return b"".join(out)


def decode_triple_head(
    value: int,
    previous: tuple[int, int] | None,
    predict_add: Callable[[], int | None],
) -> tuple[int, tuple[int, int] | None]:
    """A FLAG_REPEAT triple's first varint: (add, (copy, seek)), or (add, None) when copy
    and seek follow in the stream."""
    add, kind = value >> 2, value & 3
    if not kind:
        return add, None
    if previous is None:
        raise MalformedError("delta: a repeated triple without a previous one")
    if kind == 1:
        return add, previous
    if kind == 3 or add:
        raise MalformedError("delta: an unknown kind of control triple")
    predicted = predict_add()
    if predicted is None:
        raise MalformedError("delta: a predicted edit finds no place in the old image")
    return predicted, previous


def decode_triples(
    raw: bytes, repeat: bool = False, read_at: Callable[[int, int], bytes] | None = None
) -> list[tuple[int, int, int]]:
    """All triples of a decompressed control stream (for tests and tools)."""
    it = iter(raw)
    out: list[tuple[int, int, int]] = []
    pos = 0
    old = 0
    edit_point = -1

    def next_byte() -> int:
        nonlocal pos
        pos += 1
        return next(it)

    def predict() -> int | None:
        return None if read_at is None else next_edit(read_at, edit_point, old)

    while pos < len(raw):
        value = decode_varint(next_byte)
        add, repeated = value, None
        if repeat:
            add, repeated = decode_triple_head(value, out[-1][1:] if out else None, predict)
        if repeated is None:
            copy = decode_varint(next_byte)
            repeated = (copy, unzigzag(decode_varint(next_byte)))
        out.append((add, *repeated))
        edit_point = old + add
        old += add + repeated[1]
    return out


class DiffCoding(enum.IntEnum):
    """How the diff stream is coded; values are stable on disk."""

    PLAIN = 0  # the diff bytes themselves
    ZERO_RUNS = 1  # per chunk: records of literal bytes and zero-run lengths
    ZERO_RUNS_XOR = 2  # as ZERO_RUNS, but an output byte is old byte XOR diff byte


class Filter(enum.IntEnum):
    """Branch filter (BCJ) run before LZMA2 on the extra stream; values are stable on disk."""

    NONE = 0
    X86 = 1
    ARM = 2
    ARMTHUMB = 3


_BCJ_IDS = {
    Filter.X86: lzma.FILTER_X86,
    Filter.ARM: lzma.FILTER_ARM,
    Filter.ARMTHUMB: lzma.FILTER_ARMTHUMB,
}


def lzma_filters(flt: Filter, dict_size: int, **lzma2: Any) -> list[dict[str, Any]]:
    """The raw lzma filter chain of one stream (the decoder only needs ``dict_size``)."""
    chain: list[dict[str, Any]] = []
    if flt is not Filter.NONE:
        chain.append({"id": _BCJ_IDS[flt]})
    chain.append({"id": lzma.FILTER_LZMA2, "dict_size": dict_size, **lzma2})
    return chain


def max_dict_log(chunk_size: int) -> int:
    """Largest LZMA2 dictionary (log2) of a container: one chunk, at least 64 KiB."""
    return max(chunk_size.bit_length() - 1, MIN_DICT_LOG)


def header_dictionary(meta: ImageMetadata, key_ids: Sequence[bytes]) -> bytes:
    """The deflate dictionary of the new image's header, from the delta envelope's metadata.

    ``meta`` is the delta envelope's (its version, counter, hardware ids and
    creation time equal the new image's) and ``key_ids`` its signers'. Both ends
    compute it from the same signed envelope, so it costs no bytes.
    """
    predicted = ImageMetadata(
        version=meta.version,
        security_counter=meta.security_counter,
        hardware_ids=meta.hardware_ids,
        payload_length=0,
        payload_digest=Digest(HashAlgorithm.SHA256, bytes(32)),
        created=meta.created,
    )
    return b"".join(sorted(key_ids)) + encode_protected(predicted)


def headers_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:HEADERS_HASH]


def deflate_headers(data: bytes, zdict: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=zdict)
    return comp.compress(data) + comp.flush()


def inflate_headers(data: bytes, zdict: bytes) -> bytes:
    """Inflate the new image's headers, at most MAX_NEW_HEADERS bytes; exactly one stream."""
    try:
        dec = zlib.decompressobj(-15, zdict=zdict)
        out = dec.decompress(data, MAX_NEW_HEADERS + 1)
    except zlib.error as exc:
        raise MalformedError(f"delta: the new image's header is corrupt: {exc}") from None
    if len(out) > MAX_NEW_HEADERS:
        raise MalformedError("delta: the new image's header is too large")
    if not dec.eof:
        raise TruncatedError("truncated: the new image's header ends early")
    if dec.unused_data or dec.unconsumed_tail:
        raise MalformedError("delta: trailing bytes after the new image's header")
    return out


@dataclass(frozen=True, kw_only=True)
class DeltaHeader:
    """The container header, parsed (``read_header``) or to encode (``encode_header``).

    Keyword-only: seventeen fields, several of the same type, are not to be told apart
    by their position.
    """

    flags: int
    chunk_size: int
    base_length: int
    base_sha256: bytes  # the envelope's signed DELTA_BASE (not carried in the container)
    payload_digest: Digest  # the new image's PAYLOAD_DIGEST, from its protected header
    extra_filter: Filter
    diff_coding: DiffCoding
    dict_log: int
    new_signed: bytes  # preamble + protected header of the new image
    new_signatures: bytes  # its signature block
    control_length: int
    diff_length: int
    extra_length: int
    payload_length: int  # the new image's, from its protected header
    predictor: Arch = Arch.NONE
    phase: int = 0  # where the old image's instructions sit, modulo 4 (predictor only)
    absolute: Absolute | None = None  # absolute pointers the predictor re-aims too

    @property
    def full(self) -> bool:
        return bool(self.flags & FLAG_FULL)

    @property
    def zstd(self) -> bool:
        return bool(self.flags & FLAG_ZSTD)

    @property
    def repeat(self) -> bool:
        return bool(self.flags & FLAG_REPEAT)

    @property
    def target_length(self) -> int:
        return len(self.new_signed) + self.payload_length + len(self.new_signatures)

    @property
    def chunk_count(self) -> int:
        return chunk_count_for(self.payload_length, self.chunk_size)

    @property
    def table_length(self) -> int:
        return CHUNK_HASH * max(0, self.chunk_count - 1)

    @property
    def streams_length(self) -> int:
        if self.joined:
            return self.extra_length
        return self.control_length + self.diff_length + self.extra_length

    @property
    def joined(self) -> bool:
        return bool(self.flags & FLAG_JOINED)

    @property
    def dict_size(self) -> int:
        return 1 << self.dict_log

    def chunk_length(self, index: int) -> int:
        start = index * self.chunk_size
        return min(self.chunk_size, self.payload_length - start)


#: Predictor byte, bit 7: absolute-pointer fields follow the base length.
PREDICT_ABSOLUTE = 0x80


def _zigzag(value: int) -> bytes:
    return uvarint(((value << 1) ^ (value >> 63)) & (1 << 64) - 1)


def _encode_absolute(absolute: Absolute | None) -> bytes:
    if absolute is None:
        return b""
    return b"".join(
        [
            bytes([absolute.width]),
            uvarint(absolute.lo),
            uvarint(absolute.hi),
            _zigzag(absolute.old_bias),
            _zigzag(absolute.new_bias),
        ]
    )


def _read_absolute(stream: BinaryIO) -> Absolute:
    width = _read(stream, 1, "header")[0]
    lo, hi, old_bias, new_bias = (_varint(stream, "header") for _ in range(4))
    try:
        return Absolute(width, lo, hi, unzigzag(old_bias), unzigzag(new_bias))
    except ValueError:
        raise MalformedError("delta: bad absolute-pointer range") from None


def chunk_count_for(payload_length: int, chunk_size: int) -> int:
    return -(-payload_length // chunk_size)


def encode_header(head: DeltaHeader, zdict: bytes, table: Sequence[bytes] = ()) -> bytes:
    """The container up to its streams: fixed fields, new image headers, chunk table."""
    blob = deflate_headers(head.new_signed + head.new_signatures, zdict)
    return b"".join(
        [
            HEAD.pack(
                MAGIC,
                FORMAT_VERSION,
                head.flags,
                head.chunk_size.bit_length() - 1,
                head.extra_filter,
                head.diff_coding,
                head.dict_log,
                head.predictor | head.phase << 4 | (PREDICT_ABSOLUTE if head.absolute else 0),
            ),
            uvarint(head.base_length),
            _encode_absolute(head.absolute),
            headers_hash(head.new_signed + head.new_signatures),
            uvarint(len(blob)),
            blob,
            uvarint(head.control_length),
            uvarint(head.diff_length),
            uvarint(head.extra_length),
            *table,
        ]
    )


def _read(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TruncatedError(f"truncated: delta ends inside its {what}")
    return data


def _varint(stream: BinaryIO, what: str) -> int:
    return decode_varint(lambda: _read(stream, 1, what)[0])


def read_header(
    stream: BinaryIO, *, zdict: bytes = b"", base_sha256: bytes = bytes(32)
) -> DeltaHeader:
    """Read and check the container header (up to its chunk table) at the stream's position.

    ``zdict`` is :func:`header_dictionary` of the delta envelope, ``base_sha256``
    its DELTA_BASE value.
    """
    magic, version, flags, chunk_log, flt, coding, dict_log, predicting = HEAD.unpack(
        _read(stream, HEAD.size, "header")
    )
    if magic != MAGIC:
        raise MalformedError("not an otaguard delta (bad magic)")
    if version != FORMAT_VERSION:
        raise MalformedError(f"unsupported delta format version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise MalformedError(f"unknown delta flags 0x{flags:02x}")
    if not MIN_CHUNK_SIZE <= 1 << min(chunk_log, 63) <= MAX_CHUNK_SIZE:
        raise MalformedError(f"delta chunk size 2^{chunk_log} out of range")
    chunk_size = 1 << chunk_log
    try:
        predictor, phase = Arch(predicting & 0x0F), predicting >> 4 & 0x07
    except ValueError:
        raise MalformedError("delta: unknown predictor") from None
    if phase > 3:
        raise MalformedError("delta: predictor phase out of range")
    base_len = _varint(stream, "header")
    absolute = _read_absolute(stream) if predicting & PREDICT_ABSOLUTE else None
    if base_len > MAX_IMAGE_LENGTH:
        raise MalformedError("delta base length out of range")
    try:
        extra_filter, diff_coding = Filter(flt), DiffCoding(coding)
    except ValueError:
        raise MalformedError("delta: unknown extra filter or diff coding") from None
    if not MIN_DICT_LOG <= dict_log <= max_dict_log(chunk_size):
        raise MalformedError(f"delta: dictionary of 2^{dict_log} bytes out of range")
    if diff_coding is DiffCoding.ZERO_RUNS_XOR and predictor is not Arch.NONE:
        raise MalformedError("delta: an XOR diff with a predictor")
    expected = _read(stream, HEADERS_HASH, "header")
    blob_len = _varint(stream, "header")
    if blob_len > 2 * MAX_NEW_HEADERS:
        raise MalformedError("delta: the new image's header is too large")
    headers = inflate_headers(_read(stream, blob_len, "new image header"), zdict)
    # the dictionary comes partly from the envelope's unsigned signature block (its key ids):
    # this digest, inside the signed container, pins what it inflates to
    if not hmac.compare_digest(headers_hash(headers), expected):
        raise DigestMismatchError("delta: the new image's header does not match its digest")
    if len(headers) < PREAMBLE_SIZE:
        raise MalformedError("delta: the new image's header is cut")
    head_len = PREAMBLE_SIZE + int(struct.unpack(">I", headers[12:16])[0])
    if not PREAMBLE_SIZE < head_len <= PREAMBLE_SIZE + MAX_HEADER_SIZE:
        raise MalformedError(f"delta: new image header length {head_len} out of range")
    new_signed, new_signatures = headers[:head_len], headers[head_len:]
    if not 0 < len(new_signatures) <= MAX_SIG_BLOCK_SIZE:
        raise MalformedError("delta: the new image's signature block is missing or too large")
    inner = parse_protected(new_signed)
    payload_length = inner.payload_length
    if payload_length > MAX_IMAGE_LENGTH:  # pragma: no cover - parse_protected caps it lower
        raise MalformedError("delta: new payload length out of range")
    control_length, diff_length, extra_length = (_varint(stream, "header") for _ in range(3))
    head = DeltaHeader(
        flags=flags,
        chunk_size=chunk_size,
        base_length=base_len,
        base_sha256=base_sha256,
        payload_digest=inner.payload_digest,
        extra_filter=extra_filter,
        diff_coding=diff_coding,
        dict_log=dict_log,
        new_signed=new_signed,
        new_signatures=new_signatures,
        control_length=control_length,
        diff_length=diff_length,
        extra_length=extra_length,
        payload_length=payload_length,
        predictor=predictor,
        phase=phase,
        absolute=absolute,
    )
    if head.chunk_count > MAX_CHUNKS:
        raise MalformedError(f"delta: {head.chunk_count} chunks are too many")
    if head.full and head.diff_length:
        raise MalformedError("delta: a full-image delta has diff data")
    if head.zstd and (
        head.full
        or head.control_length
        or head.diff_length
        or flt
        or coding
        or base_len + payload_length > chunk_size
    ):
        raise MalformedError("delta: a zstd delta has only its frame, for a small image")
    if head.joined and (
        head.full
        or head.zstd
        or flt
        or 1 << dict_log > MAX_PREDICTED
        or head.control_length + head.diff_length > MAX_PREDICTED
        or head.extra_length > MAX_JOINED_STREAM
    ):
        raise MalformedError("delta: a joined delta is a plain delta of at most 4 MiB of streams")
    if (predictor or phase or absolute) and (
        head.full
        or head.zstd
        or predictor is Arch.NONE
        or base_len + payload_length > min(chunk_size, MAX_PREDICTED)
        or 1 << dict_log > MAX_PREDICTED
    ):
        raise MalformedError("delta: a predicted delta is a plain delta of a small image")
    return head
