"""MCUboot's image format: header, TLV areas, versions and trailer, as bytes.

This module only turns bytes into unverified values and back; trust decisions
live in ``mcuboot_verify``. Field layouts follow MCUboot's ``image.h`` and
imgtool 2.5.0 (where MCUboot's ``design.md`` disagrees with the code, the code
wins: UUID_VID/CID are 0x74/0x75). See docs/mcuboot.md.

Parsing is bounded the way the bootloader's ``bootutil_tlv_iter`` is: every
TLV header and length is checked against the end of its own area before it
is used, so a hostile length is a clean :class:`MalformedError`, never a read
past the area.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from otaguard.crypto.keys import PublicKey
from otaguard.errors import MalformedError, TruncatedError, UsageError

IMAGE_MAGIC = 0x96F3B83D
IMAGE_MAGIC_V1 = 0x96F3B83C
HEADER_SIZE = 32
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_INFO_SIZE = 4
TLV_HEAD_SIZE = 4
#: Trailer magic when the flash's largest write size (max_align) is 8.
BOOT_MAGIC = bytes.fromhex("77c295f360d2ef7f3552500f2cb67980")
#: Trailer magic tail when max_align is not 8 (preceded by u16 max_align).
BOOT_MAGIC_ALT_TAIL = bytes.fromhex("2de15d29410b8d77679c110f1f8a")
DEFAULT_MAX_SECTORS = 128
DEFAULT_MAX_ALIGN = 8
ERASED = 0xFF
ALIGNMENTS = (1, 2, 4, 8, 16, 32)
#: First vendor-reserved TLV type; imgtool packs types below it as one byte.
VENDOR_MIN = 0xA0


class Flag(enum.IntFlag):
    PIC = 0x1
    ENCRYPTED_AES128 = 0x4
    ENCRYPTED_AES256 = 0x8
    NON_BOOTABLE = 0x10
    RAM_LOAD = 0x20
    ROM_FIXED = 0x100
    COMPRESSED_LZMA1 = 0x200
    COMPRESSED_LZMA2 = 0x400
    COMPRESSED_ARM_THUMB = 0x800


class TlvType(enum.IntEnum):
    KEYHASH = 0x01
    PUBKEY = 0x02
    SHA256 = 0x10
    SHA384 = 0x11
    SHA512 = 0x12
    RSA2048_PSS = 0x20
    ECDSA224 = 0x21
    ECDSA_SIG = 0x22
    RSA3072_PSS = 0x23
    ED25519 = 0x24
    SIG_PURE = 0x25
    ENC_RSA2048 = 0x30
    ENC_KW = 0x31
    ENC_EC256 = 0x32
    ENC_X25519 = 0x33
    ENC_X25519_SHA512 = 0x34
    DEPENDENCY = 0x40
    SEC_CNT = 0x50
    BOOT_RECORD = 0x60
    DECOMP_SIZE = 0x70
    DECOMP_SHA = 0x71
    DECOMP_SIGNATURE = 0x72
    COMP_DEC_SIZE = 0x73
    UUID_VID = 0x74
    UUID_CID = 0x75
    # otaguard's own, in MCUboot's vendor-reserved range (xxA0-xxFF); always protected.
    OTAGUARD_HARDWARE_IDS = 0x4FA0
    OTAGUARD_CERT = 0x4FA1
    OTAGUARD_CREATED = 0x4FA2


HASH_TLVS = {TlvType.SHA256: "sha256", TlvType.SHA384: "sha384", TlvType.SHA512: "sha512"}
SIGNATURE_TLVS = frozenset(
    {TlvType.RSA2048_PSS, TlvType.ECDSA_SIG, TlvType.RSA3072_PSS, TlvType.ED25519}
)
#: What may sit in the unprotected area (MCUboot's MCUBOOT_USE_TLV_ALLOW_LIST):
#: everything else must be covered by the hash, or an attacker could add it.
UNPROTECTED_ALLOWED = frozenset(
    {
        TlvType.KEYHASH,
        TlvType.PUBKEY,
        *HASH_TLVS,
        *SIGNATURE_TLVS,
        TlvType.ECDSA224,
        TlvType.SIG_PURE,
        TlvType.ENC_RSA2048,
        TlvType.ENC_KW,
        TlvType.ENC_EC256,
        TlvType.ENC_X25519,
        TlvType.ENC_X25519_SHA512,
    }
)
MAX_HARDWARE_IDS = 32
_HW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+)(?:\.(\d+)(?:\+(\d+))?)?)?$")


@dataclass(frozen=True, order=True)
class McubootVersion:
    """``major.minor.revision+build`` as packed in the header (u8.u8.u16+u32)."""

    major: int
    minor: int = 0
    revision: int = 0
    build: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}+{self.build}"

    @property
    def boot_key(self) -> tuple[int, int, int]:
        """What the bootloader compares: the build number is ignored by default."""
        return (self.major, self.minor, self.revision)

    def auto_security_counter(self) -> int:
        """imgtool's ``--security-counter auto``."""
        return (self.major << 24) | (self.minor << 16) | self.revision

    def pack(self, endian: str) -> bytes:
        return struct.pack(endian + "BBHI", self.major, self.minor, self.revision, self.build)


def parse_version(text: str) -> McubootVersion:
    """Parse imgtool's version syntax, with the range checks imgtool lacks."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise UsageError(f"not an MCUboot version (major.minor.revision+build): {text!r}")
    major, minor, revision, build = (int(g) if g else 0 for g in match.groups())
    for name, value, limit in (
        ("major", major, 0xFF),
        ("minor", minor, 0xFF),
        ("revision", revision, 0xFFFF),
        ("build", build, 0xFFFFFFFF),
    ):
        if value > limit:
            raise UsageError(f"MCUboot version {name} {value} does not fit (max {limit})")
    return McubootVersion(major, minor, revision, build)


def parse_security_counter(text: str | None, version: McubootVersion) -> int | None:
    """imgtool's ``--security-counter``: a number (decimal or 0x hex), ``auto`` (the one
    :meth:`McubootVersion.auto_security_counter` derives), or None (no counter TLV)."""
    if text is None:
        return None
    if text == "auto":
        return version.auto_security_counter()
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"not an integer: {text!r}") from None


@dataclass(frozen=True)
class Header:
    """``struct image_header``: unverified until the hash over it matches."""

    endian: str  # "<" or ">"
    load_addr: int
    hdr_size: int
    protect_tlv_size: int
    img_size: int
    flags: int
    version: McubootVersion

    @property
    def protected_end(self) -> int:
        """End of the hashed region: header, payload and protected TLVs."""
        return self.hdr_size + self.img_size + self.protect_tlv_size

    def pack(self) -> bytes:
        e = self.endian
        return (
            struct.pack(
                e + "IIHHII",
                IMAGE_MAGIC,
                self.load_addr,
                self.hdr_size,
                self.protect_tlv_size,
                self.img_size,
                self.flags,
            )
            + self.version.pack(e)
            + struct.pack(e + "I", 0)
        )


def byte_order(endian: str) -> Literal["little", "big"]:
    """int.to_bytes' name for a struct byte-order character."""
    return "little" if endian == "<" else "big"


def detect_endian(head: bytes) -> str | None:
    """'<' or '>' if ``head`` starts with MCUboot's magic in that byte order."""
    if len(head) < 4:
        return None
    if struct.unpack("<I", head[:4])[0] == IMAGE_MAGIC:
        return "<"
    if struct.unpack(">I", head[:4])[0] == IMAGE_MAGIC:
        return ">"
    return None


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_SIZE:
        raise TruncatedError("truncated: shorter than an MCUboot header")
    endian = detect_endian(data)
    if endian is None:
        legacy = struct.unpack("<I", data[:4])[0] == IMAGE_MAGIC_V1
        raise MalformedError(
            "legacy MCUboot v1 image is not supported" if legacy else "bad MCUboot header magic"
        )
    _, load, hdr_size, prot, img_size, flags = struct.unpack(endian + "IIHHII", data[:20])
    major, minor, revision, build = struct.unpack(endian + "BBHI", data[20:28])
    if hdr_size < HEADER_SIZE:
        raise MalformedError(f"MCUboot header size {hdr_size} is smaller than the header")
    if prot and prot < TLV_INFO_SIZE:
        raise MalformedError("MCUboot protected TLV size is smaller than its info header")
    return Header(
        endian, load, hdr_size, prot, img_size, flags, McubootVersion(major, minor, revision, build)
    )


@dataclass(frozen=True)
class TlvEntry:
    type: int
    value: bytes
    protected: bool


def tlv_info(endian: str, magic: int, body_len: int) -> bytes:
    total = TLV_INFO_SIZE + body_len
    if total > 0xFFFF:
        raise UsageError("MCUboot TLV area larger than 65535 bytes")
    return struct.pack(endian + "HH", magic, total)


def encode_tlv(endian: str, tlv_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise UsageError(f"MCUboot TLV 0x{tlv_type:02x} value larger than 65535 bytes")
    if endian == ">" and tlv_type < VENDOR_MIN:
        # imgtool writes MCUboot's own types as (u8 type, u8 0) in either byte order.
        return struct.pack(">BBH", tlv_type, 0, len(value)) + value
    return struct.pack(endian + "HH", tlv_type, len(value)) + value


def _tlv_type(endian: str, raw: bytes) -> int:
    if endian == ">" and raw[1] == 0 and 0 < raw[0] < VENDOR_MIN:
        return raw[0]
    return int(struct.unpack(endian + "H", raw)[0])


def encode_area(endian: str, magic: int, entries: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(encode_tlv(endian, t, v) for t, v in entries)
    return tlv_info(endian, magic, len(body)) + body


def _parse_entries(endian: str, body: bytes, protected: bool) -> list[TlvEntry]:
    entries = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < TLV_HEAD_SIZE:
            raise MalformedError("MCUboot TLV header runs past its area")
        tlv_type = _tlv_type(endian, body[pos : pos + 2])
        (length,) = struct.unpack(endian + "H", body[pos + 2 : pos + TLV_HEAD_SIZE])
        pos += TLV_HEAD_SIZE
        if length > len(body) - pos:
            raise MalformedError(f"MCUboot TLV 0x{tlv_type:02x} length runs past its area")
        entries.append(TlvEntry(tlv_type, body[pos : pos + length], protected))
        pos += length
    return entries


def parse_protected_area(header: Header, area: bytes) -> list[TlvEntry]:
    """Parse the protected area (``area`` is exactly ih_protect_tlv_size bytes)."""
    if header.protect_tlv_size == 0:
        return []
    if len(area) < header.protect_tlv_size:
        raise TruncatedError("truncated: protected TLV area")
    magic, total = struct.unpack(header.endian + "HH", area[:TLV_INFO_SIZE])
    if magic != TLV_PROT_INFO_MAGIC:
        raise MalformedError("MCUboot protected TLV size set but no protected TLV area")
    if total != header.protect_tlv_size:
        raise MalformedError("MCUboot protected TLV area size disagrees with the header")
    return _parse_entries(header.endian, area[TLV_INFO_SIZE:total], protected=True)


def unprotected_area_size(header: Header, info: bytes) -> int:
    """Total size of the unprotected area from its 4-byte info header."""
    if len(info) < TLV_INFO_SIZE:
        raise TruncatedError("truncated: no TLV area after the payload")
    magic, total = struct.unpack(header.endian + "HH", info)
    if magic == TLV_PROT_INFO_MAGIC and header.protect_tlv_size == 0:
        raise MalformedError("MCUboot protected TLV area present but not declared in the header")
    if magic != TLV_INFO_MAGIC:
        raise MalformedError("bad MCUboot TLV area magic")
    if total < TLV_INFO_SIZE:
        raise MalformedError("MCUboot TLV area size is smaller than its info header")
    return int(total)


def parse_unprotected_area(header: Header, area: bytes) -> list[TlvEntry]:
    total = unprotected_area_size(header, area[:TLV_INFO_SIZE])
    if len(area) < total:
        raise TruncatedError("truncated: TLV area")
    return _parse_entries(header.endian, area[TLV_INFO_SIZE:total], protected=False)


# --- otaguard's vendor TLVs -------------------------------------------------------


def encode_hardware_ids(ids: Sequence[str]) -> bytes:
    """``u8 count`` then ``u8 length | UTF-8`` per id."""
    if not ids or len(ids) > MAX_HARDWARE_IDS:
        raise UsageError(f"give 1 to {MAX_HARDWARE_IDS} hardware ids")
    out = bytearray([len(ids)])
    for hw in ids:
        if not _HW_ID.match(hw):
            raise UsageError(f"invalid hardware id {hw!r}")
        raw = hw.encode()
        out += bytes([len(raw)]) + raw
    return bytes(out)


def decode_hardware_ids(value: bytes) -> tuple[str, ...]:
    if not value:
        raise MalformedError("empty hardware id TLV")
    count, pos, ids = value[0], 1, []
    for _ in range(count):
        if pos >= len(value) or pos + 1 + value[pos] > len(value):
            raise MalformedError("hardware id TLV runs past its length")
        raw = value[pos + 1 : pos + 1 + value[pos]]
        pos += 1 + value[pos]
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise MalformedError("hardware id is not UTF-8") from exc
        if not _HW_ID.match(text):
            raise MalformedError("invalid hardware id in image")
        ids.append(text)
    if pos != len(value) or not ids:
        raise MalformedError("hardware id TLV has trailing bytes or no ids")
    return tuple(ids)


# --- keys, dependencies, trailer ---------------------------------------------------


def key_material(key: PublicKey) -> bytes:
    """What MCUboot hashes for KEYHASH / embeds as PUBKEY: PKCS#1 for RSA, else SPKI."""
    fmt = (
        serialization.PublicFormat.PKCS1
        if isinstance(key, rsa.RSAPublicKey)
        else serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key.public_bytes(serialization.Encoding.DER, fmt)


def signature_tlv(key: PublicKey) -> int | None:
    """The signature TLV type MCUboot uses for ``key``; None if MCUboot has none (RSA-4096)."""
    if isinstance(key, rsa.RSAPublicKey):
        return {2048: TlvType.RSA2048_PSS, 3072: TlvType.RSA3072_PSS}.get(key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return TlvType.ECDSA_SIG
    return TlvType.ED25519


def signature_hash(key: PublicKey) -> str | None:
    """The digest RSA-PSS and ECDSA sign (of the region); None for Ed25519 (signs a message)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "sha384" if key.curve.name == "secp384r1" else "sha256"
    if isinstance(key, rsa.RSAPublicKey):
        return "sha256"
    return None


@dataclass(frozen=True)
class Dependency:
    image_id: int
    min_version: McubootVersion

    def pack(self, endian: str) -> bytes:
        return struct.pack(endian + "B3x", self.image_id) + self.min_version.pack(endian)

    @classmethod
    def unpack(cls, endian: str, value: bytes) -> Dependency:
        if len(value) != 12:
            raise MalformedError("MCUboot DEPENDENCY TLV must be 12 bytes")
        (image_id,) = struct.unpack(endian + "B3x", value[:4])
        major, minor, rev, build = struct.unpack(endian + "BBHI", value[4:])
        return cls(image_id, McubootVersion(major, minor, rev, build))


def parse_dependency(text: str) -> Dependency:
    image_id, sep, version = text.partition(",")
    if not sep or not image_id.strip().isdigit() or int(image_id) > 0xFF:
        raise UsageError(f"--dependency takes ID,VERSION (ID 0-255), got {text!r}")
    return Dependency(int(image_id), parse_version(version))


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def trailer_size(align: int, max_sectors: int, max_align: int) -> int:
    """imgtool's ``_trailer_size`` for a swap-capable, unencrypted image."""
    return max_sectors * 3 * align + max_align * 4 + align_up(16, max_align)


def boot_magic(max_align: int, endian: str) -> bytes:
    if max_align == DEFAULT_MAX_ALIGN:
        return BOOT_MAGIC
    return struct.pack(endian + "H", max_align) + BOOT_MAGIC_ALT_TAIL


def build_trailer(*, align: int, max_sectors: int, endian: str, confirm: bool) -> tuple[bytes, int]:
    """The slot's trailer bytes (erased, magic, image_ok) and its size."""
    max_align = max(DEFAULT_MAX_ALIGN, align)
    size = trailer_size(align, max_sectors, max_align)
    magic = boot_magic(max_align, endian)
    trailer = bytearray([ERASED] * (size - len(magic))) + magic
    if confirm:
        trailer[-(align_up(16, max_align) + max_align)] = 0x01
    return bytes(trailer), size


@dataclass(frozen=True)
class TrailerState:
    magic_ok: bool
    image_ok: bool | None  # None: unset (erased)


def read_trailer(slot_tail: bytes, endian: str) -> TrailerState | None:
    """The trailer's magic and image_ok flag, if ``slot_tail`` ends with a magic."""
    for max_align in (DEFAULT_MAX_ALIGN, *(a for a in ALIGNMENTS if a > DEFAULT_MAX_ALIGN)):
        magic = boot_magic(max_align, endian)
        size = align_up(16, max_align) + max_align
        if len(slot_tail) >= size and slot_tail.endswith(magic):
            flag = slot_tail[-size]
            return TrailerState(True, None if flag == ERASED else flag == 0x01)
    return None
