"""Signing MCUboot images that MCUboot and ``imgtool verify`` accept, in one streamed pass.

The output is laid out exactly as imgtool 2.5.0 lays it out (header, payload,
protected TLVs, unprotected TLVs: hash, [SIG_PURE], then KEYHASH + signature
per key, then optional padding and trailer), so that for deterministic
signatures (Ed25519) our bytes and imgtool's are identical; the interop tests
hold us to that. Unlike imgtool, the payload is never held in memory (except
for pure Ed25519, whose signature needs the whole message).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import ed25519

from otaguard.crypto.signer import Signer
from otaguard.errors import UsageError
from otaguard.image.mcuboot_format import (
    ALIGNMENTS,
    DEFAULT_MAX_SECTORS,
    ERASED,
    HEADER_SIZE,
    TLV_INFO_MAGIC,
    TLV_PROT_INFO_MAGIC,
    Dependency,
    Flag,
    Header,
    McubootVersion,
    TlvType,
    build_trailer,
    byte_order,
    encode_area,
    encode_hardware_ids,
    key_material,
    signature_hash,
    signature_tlv,
    trailer_size,
)

#: 128 KiB: measured fastest here (the buffer stays in L2 while it is hashed).
CHUNK_SIZE = 1 << 17
#: Pure Ed25519 signs the whole region as one message, so it must fit in memory.
MAX_PURE_REGION = 64 << 20
MAX_IMAGE_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class McubootSignOptions:
    version: McubootVersion
    security_counter: int | None = None
    header_size: int = 0x200
    pad_header: bool = False
    slot_size: int | None = None
    pad: bool = False
    confirm: bool = False
    align: int = 1
    max_sectors: int = DEFAULT_MAX_SECTORS
    dependencies: tuple[Dependency, ...] = ()
    hardware_ids: tuple[str, ...] = ()
    cert_chain: tuple[bytes, ...] = ()
    created: int | None = None
    pure: bool = False
    load_addr: int = 0
    endian: str = "<"


@dataclass(frozen=True)
class McubootSigned:
    header: Header
    digest: bytes
    hash_name: str
    image_size: int


def _hash_for(signers: Sequence[Signer], pure: bool) -> tuple[str, TlvType]:
    """The image hash imgtool would pick; every key must accept it."""
    kinds = set()
    for signer in signers:
        key = signer.public_key
        if signature_tlv(key) is None:
            raise UsageError("MCUboot supports RSA-2048 and RSA-3072 only (no TLV for this size)")
        # Ed25519 signs the hash TLV's digest (imgtool's default) or, pure, the region.
        kinds.add(signature_hash(key) or ("sha512" if pure else "sha256"))
    if pure and not all(isinstance(s.public_key, ed25519.Ed25519PublicKey) for s in signers):
        raise UsageError("--pure is for Ed25519 keys only")
    if len(kinds) != 1:
        raise UsageError("these keys need different MCUboot image hashes; sign with one kind")
    name = kinds.pop()
    return name, {"sha256": TlvType.SHA256, "sha384": TlvType.SHA384}.get(name, TlvType.SHA512)


def _check_options(opts: McubootSignOptions, input_size: int) -> int:
    if opts.align not in ALIGNMENTS:
        raise UsageError(f"--align must be one of {', '.join(map(str, ALIGNMENTS))}")
    if not HEADER_SIZE <= opts.header_size <= 0xFFFF:
        raise UsageError(f"--header-size must be between {HEADER_SIZE} and 0xffff")
    if not 1 <= opts.max_sectors <= 0x10000:
        raise UsageError("--max-sectors must be between 1 and 65536")
    if opts.pad and opts.slot_size is None:
        raise UsageError("--pad needs --slot-size")
    if opts.confirm and not opts.pad:
        raise UsageError("--confirm needs --pad (the flag lives in the slot trailer)")
    if opts.security_counter is not None and not 0 <= opts.security_counter <= 0xFFFFFFFF:
        raise UsageError("MCUboot security counter must fit in 32 bits")
    img_size = input_size if opts.pad_header else input_size - opts.header_size
    if img_size < 0:
        raise UsageError("input is shorter than --header-size (use --pad-header?)")
    if img_size > MAX_IMAGE_SIZE - opts.header_size:
        raise UsageError("input too large for an MCUboot image (32-bit sizes)")
    return img_size


def _protected_entries(opts: McubootSignOptions) -> list[tuple[int, bytes]]:
    e = opts.endian
    entries: list[tuple[int, bytes]] = []
    if opts.security_counter is not None:
        entries.append((TlvType.SEC_CNT, opts.security_counter.to_bytes(4, byte_order(e))))
    entries += [(TlvType.DEPENDENCY, dep.pack(e)) for dep in opts.dependencies]
    if opts.hardware_ids:
        entries.append((TlvType.OTAGUARD_HARDWARE_IDS, encode_hardware_ids(opts.hardware_ids)))
    if opts.created is not None:
        entries.append((TlvType.OTAGUARD_CREATED, opts.created.to_bytes(8, byte_order(e))))
    entries += [(TlvType.OTAGUARD_CERT, der) for der in opts.cert_chain]
    return entries


def _copy_header_room(source: BinaryIO, opts: McubootSignOptions) -> bytes:
    """The bytes between the 32-byte header and hdr_size (hashed, so exact)."""
    room = opts.header_size - HEADER_SIZE
    if opts.pad_header:
        return bytes([ERASED]) * room
    head = source.read(opts.header_size)
    if len(head) != opts.header_size or any(head):
        raise UsageError(
            "input does not start with --header-size zero bytes (use --pad-header to add them)"
        )
    return head[HEADER_SIZE:]


def sign_mcuboot(
    source: BinaryIO, dest: BinaryIO, signers: Sequence[Signer], opts: McubootSignOptions
) -> McubootSigned:
    """Sign ``source`` (a seekable file) into ``dest``; the payload is read once."""
    if not signers:
        raise UsageError("give at least one signing key")
    input_size = os.fstat(source.fileno()).st_size - source.tell()
    img_size = _check_options(opts, input_size)
    hash_name, hash_tlv = _hash_for(signers, opts.pure)
    if opts.pure and opts.header_size + img_size > MAX_PURE_REGION:
        raise UsageError("pure Ed25519 signs the whole image in memory: at most 64 MiB")
    protected = _protected_entries(opts)
    prot_area = encode_area(opts.endian, TLV_PROT_INFO_MAGIC, protected) if protected else b""
    header = Header(
        endian=opts.endian,
        load_addr=opts.load_addr,
        hdr_size=opts.header_size,
        protect_tlv_size=len(prot_area),
        img_size=img_size,
        flags=Flag.RAM_LOAD if opts.load_addr else 0,
        version=opts.version,
    )
    hasher = hashlib.new(hash_name)
    region = bytearray() if opts.pure else None

    def emit(data: bytes) -> None:
        hasher.update(data)
        dest.write(data)
        if region is not None:
            region.extend(data)

    emit(header.pack() + _copy_header_room(source, opts))
    remaining = img_size
    while remaining:
        chunk = source.read(min(CHUNK_SIZE, remaining))
        if not chunk:
            raise UsageError("input shrank while it was being signed")
        emit(chunk)
        remaining -= len(chunk)
    emit(prot_area)
    digest = hasher.digest()

    unprotected: list[tuple[int, bytes]] = [(hash_tlv, digest)]
    if opts.pure:
        unprotected.append((TlvType.SIG_PURE, b"\x01"))
    for signer in signers:
        key = signer.public_key
        unprotected.append((TlvType.KEYHASH, hashlib.new(hash_name, key_material(key)).digest()))
        if isinstance(key, ed25519.Ed25519PublicKey):
            # imgtool's (non-pure) Ed25519 signs the digest as the message.
            signature = signer.sign(bytes(region) if region is not None else digest)
        else:
            # RSA-PSS and ECDSA sign the region's digest (SHA-256, or SHA-384 for P-384).
            signature = signer.sign_prehashed(digest)
        tlv_type = signature_tlv(key)
        assert tlv_type is not None  # checked by _hash_for
        unprotected.append((tlv_type, signature))
    tail = encode_area(opts.endian, TLV_INFO_MAGIC, unprotected)
    dest.write(tail)
    size = header.protected_end + len(tail)
    if opts.slot_size is not None:
        size = _pad_to_slot(dest, size, opts)
    return McubootSigned(header, digest, hash_name, size)


def _pad_to_slot(dest: BinaryIO, size: int, opts: McubootSignOptions) -> int:
    assert opts.slot_size is not None
    max_align = max(8, opts.align)
    tsize = trailer_size(opts.align, opts.max_sectors, max_align)
    if size + tsize > opts.slot_size:
        raise UsageError(
            f"image (0x{size:x}) plus trailer (0x{tsize:x}) exceeds "
            f"--slot-size 0x{opts.slot_size:x}"
        )
    if not opts.pad:
        return size
    trailer, _ = build_trailer(
        align=opts.align, max_sectors=opts.max_sectors, endian=opts.endian, confirm=opts.confirm
    )
    gap = opts.slot_size - size - len(trailer)
    filler = bytes([ERASED]) * min(gap, CHUNK_SIZE)
    while gap:
        step = min(gap, len(filler))
        dest.write(filler[:step])
        gap -= step
    dest.write(trailer)
    return opts.slot_size
