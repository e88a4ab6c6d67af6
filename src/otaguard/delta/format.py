"""The delta container: wire format, encoding and strict parsing.

The container is the payload of a signed envelope of kind DELTA (layout byte by
byte in ``docs/delta.md``). All integers are big-endian::

    magic "OTADELTA" | u16 version (1) | u16 flags | u32 chunk size
    u64 base length  | 32 base SHA-256      -- the whole old image file
    u64 target length| 32 target SHA-256    -- the whole new image file
    u32 H | H bytes: the new image's preamble + protected header (as signed)
    u32 S | S bytes: the new image's signature block
    u32 chunk count
    chunk records, in order, one per chunk of the new image's payload

A chunk record is ``u8 method | u8 filter | u16 reserved (0) | u32 output
length | 32 output SHA-256 | 32 source SHA-256 | u32 control length | u32 diff
length | u32 extra length`` followed by the three compressed streams.

Everything here is unverified; ``apply`` decides. Every length is capped before
it is used, so a hostile container cannot make the applier allocate without
bound.
"""

from __future__ import annotations

import enum
import lzma
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from otaguard.errors import MalformedError, TruncatedError
from otaguard.image.envelope_format import (
    MAX_HEADER_SIZE,
    MAX_SIG_BLOCK_SIZE,
    PREAMBLE_SIZE,
)

MAGIC = b"OTADELTA"
FORMAT_VERSION = 1
#: flags bit 0: every chunk is a literal (the "compressed full image" fallback).
FLAG_FULL = 0x0001
_KNOWN_FLAGS = FLAG_FULL

HEAD = struct.Struct(">8sHHIQ32sQ32s")
CHUNK_HEAD = struct.Struct(">BBHI32s32sIII")
#: A varint is at most 10 bytes (64 bits, 7 per byte).
MAX_VARINT = 10

MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 23  # 8 MiB: keeps the applier under its memory bound
DEFAULT_CHUNK_SIZE = 1 << 22  # 4 MiB
MAX_IMAGE_LENGTH = 1 << 48
MAX_CHUNKS = 1 << 24


def max_stream_length(chunk_size: int) -> int:
    """Largest compressed stream a chunk of ``chunk_size`` may carry (lzma overhead included)."""
    return chunk_size + chunk_size // 8 + 4096


def max_triples(out_len: int) -> int:
    """Most control triples a chunk may have (a pure seek first, then >= 1 byte each)."""
    return out_len + 1


def encode_triple(add: int, copy: int, seek: int) -> bytes:
    """One control triple: LEB128 ``add`` and ``copy``, zigzag LEB128 ``seek``."""
    out = bytearray()
    for field in (add, copy, (seek << 1) ^ (seek >> 63)):
        value = field & (1 << 64) - 1
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


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
    raise MalformedError("delta: a control varint is longer than 64 bits")


def encode_zero_runs(diff: bytes) -> bytes:
    """Records ``uvarint literal length | literal | uvarint zero run``; no empty last record."""
    out = []
    pos = 0
    for match in _ZEROS.finditer(diff):
        literal = diff[pos : match.start()]
        out += [_uvarint(len(literal)), literal, _uvarint(match.end() - match.start())]
        pos = match.end()
    if pos < len(diff):
        out += [_uvarint(len(diff) - pos), diff[pos:], _uvarint(0)]
    return b"".join(out)


_ZEROS = re.compile(rb"\x00{8,}")


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def decode_triples(raw: bytes) -> list[tuple[int, int, int]]:
    """All triples of a decompressed control stream (for tests and tools)."""
    it = iter(raw)
    out = []
    pos = 0

    def next_byte() -> int:
        nonlocal pos
        pos += 1
        return next(it)

    while pos < len(raw):
        add, copy = decode_varint(next_byte), decode_varint(next_byte)
        out.append((add, copy, unzigzag(decode_varint(next_byte))))
    return out


class Method(enum.IntEnum):
    """How a chunk is made; values are stable on disk."""

    BSDIFF = 0  # control triples over the old image + diff + extra streams
    LITERAL = 1  # the chunk itself, compressed, in the extra stream
    BSDIFF_ZRLE = 2  # as BSDIFF, the diff stream's zero runs coded as lengths


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


def dict_size_for(chunk_size: int) -> int:
    """LZMA2 dictionary of every stream: a stream never holds more than one chunk."""
    return max(chunk_size, 1 << 16)


@dataclass(frozen=True)
class DeltaHeader:
    flags: int
    chunk_size: int
    base_length: int
    base_sha256: bytes
    target_length: int
    target_sha256: bytes
    new_signed: bytes  # preamble + protected header of the new image
    new_signatures: bytes  # its signature block
    chunk_count: int

    @property
    def full(self) -> bool:
        return bool(self.flags & FLAG_FULL)

    @property
    def payload_length(self) -> int:
        return self.target_length - len(self.new_signed) - len(self.new_signatures)

    def chunk_length(self, index: int) -> int:
        start = index * self.chunk_size
        return min(self.chunk_size, self.payload_length - start)


@dataclass(frozen=True)
class ChunkHead:
    method: Method
    filter: Filter
    out_length: int
    out_sha256: bytes
    src_sha256: bytes
    control_length: int
    diff_length: int
    extra_length: int

    @property
    def body_length(self) -> int:
        return self.control_length + self.diff_length + self.extra_length


def chunk_count_for(payload_length: int, chunk_size: int) -> int:
    return -(-payload_length // chunk_size)


def encode_header(head: DeltaHeader) -> bytes:
    return b"".join(
        [
            HEAD.pack(
                MAGIC,
                FORMAT_VERSION,
                head.flags,
                head.chunk_size,
                head.base_length,
                head.base_sha256,
                head.target_length,
                head.target_sha256,
            ),
            struct.pack(">I", len(head.new_signed)),
            head.new_signed,
            struct.pack(">I", len(head.new_signatures)),
            head.new_signatures,
            struct.pack(">I", head.chunk_count),
        ]
    )


def encode_chunk_head(chunk: ChunkHead) -> bytes:
    return CHUNK_HEAD.pack(
        chunk.method,
        chunk.filter,
        0,
        chunk.out_length,
        chunk.out_sha256,
        chunk.src_sha256,
        chunk.control_length,
        chunk.diff_length,
        chunk.extra_length,
    )


def _read(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TruncatedError(f"truncated: delta ends inside its {what}")
    return data


def _u32(stream: BinaryIO, what: str) -> int:
    return int(struct.unpack(">I", _read(stream, 4, what))[0])


def read_header(stream: BinaryIO) -> DeltaHeader:
    """Read and check the container header from the stream's current position."""
    magic, version, flags, chunk_size, base_len, base_sha, target_len, target_sha = HEAD.unpack(
        _read(stream, HEAD.size, "header")
    )
    if magic != MAGIC:
        raise MalformedError("not an otaguard delta (bad magic)")
    if version != FORMAT_VERSION:
        raise MalformedError(f"unsupported delta format version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise MalformedError(f"unknown delta flags 0x{flags:04x}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise MalformedError(f"delta chunk size {chunk_size} out of range")
    if base_len > MAX_IMAGE_LENGTH or target_len > MAX_IMAGE_LENGTH:
        raise MalformedError("delta image length out of range")
    head_len = _u32(stream, "header")
    if not PREAMBLE_SIZE < head_len <= PREAMBLE_SIZE + MAX_HEADER_SIZE:
        raise MalformedError(f"delta: new image header length {head_len} out of range")
    new_signed = _read(stream, head_len, "new image header")
    sig_len = _u32(stream, "header")
    if not 0 < sig_len <= MAX_SIG_BLOCK_SIZE:
        raise MalformedError(f"delta: signature block length {sig_len} out of range")
    new_signatures = _read(stream, sig_len, "new image signature block")
    count = _u32(stream, "header")
    if target_len < head_len + sig_len:
        raise MalformedError("delta: target length smaller than its header and signatures")
    head = DeltaHeader(
        flags,
        chunk_size,
        base_len,
        base_sha,
        target_len,
        target_sha,
        new_signed,
        new_signatures,
        count,
    )
    if count > MAX_CHUNKS or count != chunk_count_for(head.payload_length, chunk_size):
        raise MalformedError(f"delta: {count} chunks do not cover the new payload")
    return head


def read_chunk_head(stream: BinaryIO, head: DeltaHeader, index: int) -> ChunkHead:
    """Read and check the fixed part of chunk ``index``."""
    raw = _read(stream, CHUNK_HEAD.size, f"chunk {index}")
    method, flt, reserved, out_len, out_sha, src_sha, c_len, d_len, e_len = CHUNK_HEAD.unpack(raw)
    try:
        method = Method(method)
        flt = Filter(flt)
    except ValueError:
        raise MalformedError(f"delta chunk {index}: unknown method or filter") from None
    if reserved:
        raise MalformedError(f"delta chunk {index}: reserved field not zero")
    if out_len != head.chunk_length(index):
        raise MalformedError(f"delta chunk {index}: output length {out_len} is not its share")
    cap = max_stream_length(head.chunk_size)
    if max(c_len, d_len, e_len) > cap:
        raise MalformedError(f"delta chunk {index}: a stream is longer than {cap} bytes")
    if method is Method.LITERAL and (c_len or d_len):
        raise MalformedError(f"delta chunk {index}: a literal chunk has control or diff data")
    if head.full and method is not Method.LITERAL:
        raise MalformedError(f"delta chunk {index}: a full-image delta reads the old image")
    return ChunkHead(method, flt, out_len, out_sha, src_sha, c_len, d_len, e_len)
