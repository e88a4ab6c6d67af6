"""The native signed image ("envelope"): wire format, encoding and parsing.

This module only turns bytes into unverified values and back; it decides
nothing about trust (see ``envelope_verify``). The layout, documented byte by
byte in ``docs/image-format.md``, is::

    offset 0           preamble (16 bytes)       \\
    offset 16          protected header (H)       > signed: bytes [0, 16 + H)
    offset 16 + H      payload (L bytes)         /  bound by PAYLOAD_DIGEST
    offset 16 + H + L  signature block           -- not signed; ends the file

All integers are big-endian. The preamble is ``magic "OTAGUARD" | u16 format
version | u16 flags (0) | u32 H``. The protected header is a sequence of TLVs
``u16 type | u32 length | value`` in strictly ascending type order, each type
at most once. PAYLOAD_LENGTH (type 1) and PAYLOAD_DIGEST (type 2) are always
first, so their offsets are fixed, which lets a shell script with ``od`` find
them (the documented ``openssl`` check relies on that).

Parsing rules (fail closed): every length is checked against the bytes that
remain before it is used, every structure must be consumed exactly, unknown
TLV types are rejected unless their high bit (0x8000) marks them as ignorable
extensions, and every count and size has a hard cap so that hostile lengths
cannot make a verifier allocate or read without bound.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from otaguard.errors import MalformedError, TruncatedError
from otaguard.image.kinds import PayloadKind
from otaguard.image.semver import MAX_VERSION_LENGTH, parse_semver

MAGIC = b"OTAGUARD"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct(">8sHHI")
PREAMBLE_SIZE = PREAMBLE.size  # 16
SIG_MAGIC = b"OSIG"
SIG_BLOCK_HEAD = struct.Struct(">4sHH")
SIG_ENTRY_HEAD = struct.Struct(">BB32sH")

# Hard caps against hostile lengths.
MAX_HEADER_SIZE = 1 << 20
MAX_SIG_BLOCK_SIZE = 64 * 1024
MAX_SIGNATURES = 16
MAX_SIGNATURE_SIZE = 1024
MAX_PAYLOAD_LENGTH = 1 << 48
MAX_HARDWARE_IDS = 32
MAX_ANNOTATIONS = 64
MAX_ANNOTATION_VALUE = 4096
MAX_CERTS = 8
MAX_CERT_SIZE = 16 * 1024

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Tlv(enum.IntEnum):
    """Protected header TLV types. Values are stable on disk."""

    PAYLOAD_LENGTH = 0x0001
    PAYLOAD_DIGEST = 0x0002
    PAYLOAD_KIND = 0x0003
    DELTA_BASE = 0x0004
    VERSION = 0x0010
    SECURITY_COUNTER = 0x0011
    HARDWARE_IDS = 0x0012
    CREATED = 0x0013
    ANNOTATIONS = 0x0020
    CERT_CHAIN = 0x0030


_KNOWN_TLVS = frozenset(int(t) for t in Tlv)
#: TLV types with this bit set may be skipped by a verifier that does not know them.
TLV_IGNORABLE = 0x8000
_REQUIRED = (
    Tlv.PAYLOAD_LENGTH,
    Tlv.PAYLOAD_DIGEST,
    Tlv.PAYLOAD_KIND,
    Tlv.VERSION,
    Tlv.SECURITY_COUNTER,
    Tlv.HARDWARE_IDS,
    Tlv.CREATED,
)


class HashAlgorithm(enum.IntEnum):
    """Payload digest algorithms; values are stable on disk."""

    SHA256 = 1
    SHA512 = 2

    @property
    def hashlib_name(self) -> str:
        return "sha256" if self is HashAlgorithm.SHA256 else "sha512"

    @property
    def size(self) -> int:
        return 32 if self is HashAlgorithm.SHA256 else 64


@dataclass(frozen=True)
class Digest:
    algorithm: HashAlgorithm
    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != self.algorithm.size:
            raise ValueError("digest length does not match its algorithm")

    def __str__(self) -> str:
        return f"{self.algorithm.hashlib_name}:{self.value.hex()}"


@dataclass(frozen=True)
class ImageMetadata:
    """Everything the protected header says. Unverified until a verifier returns it."""

    version: str
    security_counter: int
    hardware_ids: tuple[str, ...]
    payload_length: int
    payload_digest: Digest
    created: int
    payload_kind: PayloadKind = PayloadKind.FULL
    delta_base: Digest | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    cert_chain: tuple[bytes, ...] = ()
    extensions: tuple[tuple[int, bytes], ...] = field(default=())

    def __post_init__(self) -> None:
        validate_metadata(self)


@dataclass(frozen=True)
class SignatureEntry:
    """One signature: the scheme id as stored (may be unknown), key id, bytes."""

    scheme: int
    key_id: bytes
    signature: bytes


def validate_metadata(meta: ImageMetadata) -> None:
    """Raise MalformedError if ``meta`` could not be encoded as a valid header."""
    parse_semver(meta.version)
    if not 0 <= meta.security_counter <= 0xFFFFFFFF:
        raise MalformedError("security counter must fit in 32 bits")
    if not 1 <= len(meta.hardware_ids) <= MAX_HARDWARE_IDS:
        raise MalformedError(f"an image needs 1 to {MAX_HARDWARE_IDS} hardware ids")
    if len(set(meta.hardware_ids)) != len(meta.hardware_ids):
        raise MalformedError("duplicate hardware id")
    for hwid in meta.hardware_ids:
        if not _ID_RE.match(hwid):
            raise MalformedError(f"invalid hardware id {hwid!r}")
    if not 0 <= meta.payload_length <= MAX_PAYLOAD_LENGTH:
        raise MalformedError("payload length out of range")
    if not 0 <= meta.created < 1 << 63:
        raise MalformedError("creation time out of range")
    if (meta.payload_kind is PayloadKind.DELTA) != (meta.delta_base is not None):
        raise MalformedError("a delta payload, and only a delta, names its base digest")
    if len(meta.annotations) > MAX_ANNOTATIONS:
        raise MalformedError(f"more than {MAX_ANNOTATIONS} annotations")
    keys = [k for k, _ in meta.annotations]
    if keys != sorted(set(keys)):
        raise MalformedError("annotation keys must be unique and sorted")
    for key, value in meta.annotations:
        if not _KEY_RE.match(key):
            raise MalformedError(f"invalid annotation key {key!r}")
        if len(value.encode()) > MAX_ANNOTATION_VALUE:
            raise MalformedError(f"annotation {key!r} longer than {MAX_ANNOTATION_VALUE} bytes")
    if len(meta.cert_chain) > MAX_CERTS:
        raise MalformedError(f"more than {MAX_CERTS} certificates")
    for cert in meta.cert_chain:
        if not 1 <= len(cert) <= MAX_CERT_SIZE:
            raise MalformedError("certificate size out of range")
    ext_types = [t for t, _ in meta.extensions]
    if ext_types != sorted(set(ext_types)) or any(not t & TLV_IGNORABLE for t in ext_types):
        raise MalformedError("extensions must have unique ignorable (0x8000) types")


# --- encoding -----------------------------------------------------------------


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">HI", kind, len(value)) + value


def _u16_list(items: Sequence[bytes], length_fmt: str) -> bytes:
    out = [struct.pack(">H", len(items))]
    for item in items:
        out.append(struct.pack(length_fmt, len(item)) + item)
    return b"".join(out)


def encode_protected(meta: ImageMetadata) -> bytes:
    """Encode preamble + protected header: exactly the bytes that get signed."""
    tlvs: list[tuple[int, bytes]] = [
        (Tlv.PAYLOAD_LENGTH, struct.pack(">Q", meta.payload_length)),
        (
            Tlv.PAYLOAD_DIGEST,
            bytes([meta.payload_digest.algorithm]) + meta.payload_digest.value,
        ),
        (Tlv.PAYLOAD_KIND, bytes([meta.payload_kind])),
        (Tlv.VERSION, meta.version.encode("ascii")),
        (Tlv.SECURITY_COUNTER, struct.pack(">I", meta.security_counter)),
        (
            Tlv.HARDWARE_IDS,
            _u16_list([h.encode("ascii") for h in meta.hardware_ids], ">H"),
        ),
        (Tlv.CREATED, struct.pack(">Q", meta.created)),
    ]
    if meta.delta_base is not None:
        tlvs.append((Tlv.DELTA_BASE, bytes([meta.delta_base.algorithm]) + meta.delta_base.value))
    if meta.annotations:
        body = [struct.pack(">H", len(meta.annotations))]
        for key, value in meta.annotations:
            raw = value.encode("utf-8")
            body.append(struct.pack(">H", len(key)) + key.encode("ascii"))
            body.append(struct.pack(">I", len(raw)) + raw)
        tlvs.append((Tlv.ANNOTATIONS, b"".join(body)))
    if meta.cert_chain:
        tlvs.append((Tlv.CERT_CHAIN, _u16_list(list(meta.cert_chain), ">I")))
    tlvs.extend(meta.extensions)
    tlvs.sort(key=lambda t: t[0])
    header = b"".join(_tlv(kind, value) for kind, value in tlvs)
    if len(header) > MAX_HEADER_SIZE:
        raise MalformedError("protected header too large")
    return PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header)) + header


def encode_signature_block(entries: Sequence[SignatureEntry]) -> bytes:
    if not 1 <= len(entries) <= MAX_SIGNATURES:
        raise ValueError(f"an envelope carries 1 to {MAX_SIGNATURES} signatures")
    out = [SIG_BLOCK_HEAD.pack(SIG_MAGIC, len(entries), 0)]
    for entry in entries:
        out.append(SIG_ENTRY_HEAD.pack(entry.scheme, 0, entry.key_id, len(entry.signature)))
        out.append(entry.signature)
    return b"".join(out)


# --- parsing ------------------------------------------------------------------


class _Cursor:
    """Bounds-checked reader over one structure; ``done()`` demands it is fully consumed."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._view):
            raise MalformedError(f"{self._what}: a length points past its end")
        chunk = bytes(self._view[self._pos : self._pos + n])
        self._pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def u16(self) -> int:
        return int(self.unpack(">H")[0])

    def u32(self) -> int:
        return int(self.unpack(">I")[0])

    @property
    def remaining(self) -> int:
        return len(self._view) - self._pos

    def done(self) -> None:
        if self.remaining:
            raise MalformedError(f"{self._what}: {self.remaining} unexpected trailing bytes")


def parse_preamble(data: bytes) -> int:
    """Check the 16-byte preamble and return the protected header length H."""
    if len(data) < PREAMBLE_SIZE:
        raise TruncatedError("truncated: image shorter than its 16-byte preamble")
    magic, version, flags, header_len = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    if magic != MAGIC:
        raise MalformedError("not an otaguard image (bad magic)")
    if version != FORMAT_VERSION:
        raise MalformedError(f"unsupported envelope format version {version}")
    if flags != 0:
        raise MalformedError(f"unknown preamble flags 0x{flags:04x}")
    if not 0 < header_len <= MAX_HEADER_SIZE:
        raise MalformedError(f"protected header length {header_len} out of range")
    return int(header_len)


def _digest(value: bytes, what: str) -> Digest:
    if not value:
        raise MalformedError(f"{what}: empty")
    try:
        algorithm = HashAlgorithm(value[0])
    except ValueError:
        raise MalformedError(f"{what}: unknown hash algorithm {value[0]}") from None
    if len(value) != 1 + algorithm.size:
        raise MalformedError(f"{what}: wrong length for {algorithm.hashlib_name}")
    return Digest(algorithm, value[1:])


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedError(f"{what} is not ASCII") from None


def _fixed_int(value: bytes, size: int, what: str) -> int:
    if len(value) != size:
        raise MalformedError(f"{what}: expected {size} bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def parse_protected(signed: bytes) -> ImageMetadata:
    """Parse preamble + protected header (exactly ``16 + H`` bytes) into metadata."""
    header_len = parse_preamble(signed)
    if len(signed) != PREAMBLE_SIZE + header_len:
        if len(signed) < PREAMBLE_SIZE + header_len:
            raise TruncatedError("truncated: image ends inside its protected header")
        raise MalformedError("protected header length does not match")
    cur = _Cursor(memoryview(signed)[PREAMBLE_SIZE:], "protected header")
    fields: dict[int, bytes] = {}
    extensions: list[tuple[int, bytes]] = []
    last = -1
    while cur.remaining:
        kind = cur.u16()
        length = cur.u32()
        value = cur.take(length)
        if kind <= last:
            raise MalformedError("protected header: TLVs out of order or repeated")
        last = kind
        if kind in _KNOWN_TLVS:
            fields[kind] = value
        elif kind & TLV_IGNORABLE:
            extensions.append((kind, value))
        else:
            raise MalformedError(f"protected header: unknown critical TLV 0x{kind:04x}")
    for required in _REQUIRED:
        if required not in fields:
            raise MalformedError(f"protected header: missing {required.name}")
    # Fixed offsets promised to the documented openssl check.
    first_two = list(fields)[:2]
    if first_two != [Tlv.PAYLOAD_LENGTH, Tlv.PAYLOAD_DIGEST]:
        raise MalformedError("protected header: PAYLOAD_LENGTH and PAYLOAD_DIGEST must come first")

    kind_raw = _fixed_int(fields[Tlv.PAYLOAD_KIND], 1, "PAYLOAD_KIND")
    try:
        payload_kind = PayloadKind(kind_raw)
    except ValueError:
        raise MalformedError(f"unknown payload kind {kind_raw}") from None
    version = _ascii(fields[Tlv.VERSION], "version")
    if len(version) > MAX_VERSION_LENGTH:
        raise MalformedError("version too long")

    hw = _Cursor(fields[Tlv.HARDWARE_IDS], "hardware ids")
    count = hw.u16()
    if count > MAX_HARDWARE_IDS:
        raise MalformedError("too many hardware ids")
    hardware_ids = tuple(_ascii(hw.take(hw.u16()), "hardware id") for _ in range(count))
    hw.done()

    annotations: list[tuple[str, str]] = []
    if Tlv.ANNOTATIONS in fields:
        ann = _Cursor(fields[Tlv.ANNOTATIONS], "annotations")
        count = ann.u16()
        if count > MAX_ANNOTATIONS:
            raise MalformedError("too many annotations")
        for _ in range(count):
            key = _ascii(ann.take(ann.u16()), "annotation key")
            try:
                text = ann.take(ann.u32()).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedError("annotation value is not UTF-8") from None
            annotations.append((key, text))
        ann.done()
        if not annotations:
            raise MalformedError("empty ANNOTATIONS TLV")

    certs: list[bytes] = []
    if Tlv.CERT_CHAIN in fields:
        chain = _Cursor(fields[Tlv.CERT_CHAIN], "certificate chain")
        count = chain.u16()
        if not 1 <= count <= MAX_CERTS:
            raise MalformedError("certificate count out of range")
        certs = [chain.take(chain.u32()) for _ in range(count)]
        chain.done()

    return ImageMetadata(
        version=version,
        security_counter=_fixed_int(fields[Tlv.SECURITY_COUNTER], 4, "SECURITY_COUNTER"),
        hardware_ids=hardware_ids,
        payload_length=_fixed_int(fields[Tlv.PAYLOAD_LENGTH], 8, "PAYLOAD_LENGTH"),
        payload_digest=_digest(fields[Tlv.PAYLOAD_DIGEST], "PAYLOAD_DIGEST"),
        created=_fixed_int(fields[Tlv.CREATED], 8, "CREATED"),
        payload_kind=payload_kind,
        delta_base=(
            _digest(fields[Tlv.DELTA_BASE], "DELTA_BASE") if Tlv.DELTA_BASE in fields else None
        ),
        annotations=tuple(annotations),
        cert_chain=tuple(certs),
        extensions=tuple(extensions),
    )


def parse_signature_block(data: bytes) -> tuple[SignatureEntry, ...]:
    """Parse the signature block, which must run exactly to the end of the image."""
    if len(data) < SIG_BLOCK_HEAD.size:
        raise TruncatedError("truncated: image ends before its signature block")
    if len(data) > MAX_SIG_BLOCK_SIZE:
        raise MalformedError("signature block too large")
    cur = _Cursor(data, "signature block")
    magic, count, reserved = cur.unpack(">4sHH")
    if magic != SIG_MAGIC:
        raise MalformedError("signature block: bad magic")
    if reserved != 0:
        raise MalformedError("signature block: reserved field not zero")
    if not 1 <= count <= MAX_SIGNATURES:
        raise MalformedError(f"signature block: {count} signatures (1 to {MAX_SIGNATURES} allowed)")
    entries: list[SignatureEntry] = []
    seen: set[bytes] = set()
    for _ in range(count):
        if cur.remaining < SIG_ENTRY_HEAD.size:
            raise TruncatedError("truncated: image ends inside a signature entry")
        scheme, pad, kid, length = SIG_ENTRY_HEAD.unpack(cur.take(SIG_ENTRY_HEAD.size))
        if pad != 0:
            raise MalformedError("signature entry: reserved byte not zero")
        if not 1 <= length <= MAX_SIGNATURE_SIZE:
            raise MalformedError("signature entry: signature length out of range")
        if length > cur.remaining:
            raise TruncatedError("truncated: image ends inside a signature")
        if kid in seen:
            raise MalformedError("signature block: two signatures name the same key")
        seen.add(kid)
        entries.append(SignatureEntry(scheme, kid, cur.take(length)))
    cur.done()
    return tuple(entries)
