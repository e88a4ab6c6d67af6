"""Verifying MCUboot images: pure decisions over a byte stream and explicit trust.

Steps, in order (each raises its own :class:`RejectedError`):

1. Structure: header, protected and unprotected TLV areas parse with every
   length inside its own area and the whole image inside the file (and inside
   ``max_image_size``, the slot, when given: MCUboot issue #2025 was a corrupt
   ih_img_size that made the bootloader hash for hours). TLVs the hash does not
   cover are limited to MCUboot's allow list, so nothing that matters
   (SEC_CNT, dependencies, our hardware ids) can be added after signing.
2. Keys: a signature counts only if a KEYHASH/PUBKEY naming a trusted key
   precedes it (MCUboot's pairing rule). No signature at all is a rejection
   (a hash-only image proves nothing), so is no signature by a trusted key;
   both are decided before the payload is read.
3. Digest: the hashed region (header, payload, protected TLVs) is read once
   and must match the hash TLV (constant-time compare).
4. Signatures, then threshold: every trusted key's signature must verify;
   at least ``threshold`` distinct trusted keys must have signed.
5. Policy on the now-authenticated TLVs: hardware id (otaguard's vendor TLV),
   security counter (SEC_CNT), minimum version.

Encrypted images are refused: their hash covers the plaintext, which only the
device's key can recover, so we could not check it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from otaguard.crypto.keys import PublicKey, key_id
from otaguard.crypto.schemes import scheme_for_key, verify_prehashed, verify_signature
from otaguard.errors import (
    DigestMismatchError,
    HardwareIdError,
    MalformedError,
    PolicyError,
    SecurityCounterError,
    SignatureError,
    ThresholdError,
    TruncatedError,
    UnknownKeyError,
    VersionError,
)
from otaguard.image.kinds import PayloadKind
from otaguard.image.mcuboot_format import (
    HASH_TLVS,
    HEADER_SIZE,
    SIGNATURE_TLVS,
    TLV_INFO_SIZE,
    UNPROTECTED_ALLOWED,
    Dependency,
    Flag,
    Header,
    TlvEntry,
    TlvType,
    TrailerState,
    byte_order,
    decode_hardware_ids,
    key_material,
    parse_header,
    parse_protected_area,
    parse_unprotected_area,
    parse_version,
    read_trailer,
    signature_hash,
    signature_tlv,
    unprotected_area_size,
)
from otaguard.image.policy import ImagePolicy
from otaguard.image.trust import PrecomputedDigest, TrustedKeys

#: 128 KiB: measured fastest here (the buffer stays in L2 while it is hashed).
CHUNK_SIZE = 1 << 17
MAX_PURE_REGION = 64 << 20
_HASH_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_ONCE = (
    TlvType.SEC_CNT,
    TlvType.OTAGUARD_HARDWARE_IDS,
    TlvType.OTAGUARD_CREATED,
    TlvType.SIG_PURE,
)


@dataclass(frozen=True)
class McubootImage:
    """A parsed MCUboot image: every field here is unverified."""

    header: Header
    protected: tuple[TlvEntry, ...]
    unprotected: tuple[TlvEntry, ...]
    tlv_end: int
    file_size: int
    hash_name: str
    hash_value: bytes
    pure: bool
    security_counter: int | None
    dependencies: tuple[Dependency, ...]
    hardware_ids: tuple[str, ...]
    created: int | None
    cert_chain: tuple[bytes, ...]
    trailer: TrailerState | None


@dataclass(frozen=True)
class VerifiedMcuboot:
    format: ClassVar[Literal["mcuboot"]] = "mcuboot"  # beside VerifiedImage's (verify_any)
    image: McubootImage
    signed_by: tuple[str, ...]


#: Chooses trusted keys from the unverified image (e.g. its certificate chain).
McubootKeyResolver = Callable[[McubootImage], TrustedKeys]


def _read_at(stream: BinaryIO, offset: int, size: int, what: str) -> bytes:
    stream.seek(offset)
    data = stream.read(size)
    if len(data) != size:
        raise TruncatedError(f"truncated: {what}")
    return data


def _file_size(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        here = stream.tell()
        size = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return size


def read_image(stream: BinaryIO, *, max_image_size: int | None = None) -> McubootImage:
    """Parse the header and both TLV areas (step 1); reads no payload."""
    size = _file_size(stream)
    limit = size if max_image_size is None else min(size, max_image_size)
    header = parse_header(_read_at(stream, 0, min(HEADER_SIZE, size), "MCUboot header"))
    if header.flags & (Flag.ENCRYPTED_AES128 | Flag.ENCRYPTED_AES256):
        raise PolicyError("encrypted MCUboot images are not supported (the hash is of plaintext)")
    prot_start = header.hdr_size + header.img_size
    if header.protected_end + TLV_INFO_SIZE > limit:
        raise TruncatedError(
            "truncated: MCUboot header declares more bytes than the "
            + ("image has" if limit == size else "slot holds")
        )
    prot_area = _read_at(stream, prot_start, header.protect_tlv_size, "protected TLVs")
    protected = parse_protected_area(header, prot_area)
    info = _read_at(stream, header.protected_end, TLV_INFO_SIZE, "TLV area")
    total = unprotected_area_size(header, info)
    tlv_end = header.protected_end + total
    if tlv_end > limit:
        raise TruncatedError("truncated: MCUboot TLV area runs past the end of the image")
    area = _read_at(stream, header.protected_end, total, "TLV area")
    unprotected = parse_unprotected_area(header, area)
    tail_len = min(size - tlv_end, 64)
    trailer = None
    if tail_len > 0:
        tail = _read_at(stream, size - tail_len, tail_len, "trailer")
        trailer = read_trailer(tail, header.endian)
    return _interpret(header, protected, unprotected, tlv_end, size, trailer)


def _interpret(
    header: Header,
    protected: list[TlvEntry],
    unprotected: list[TlvEntry],
    tlv_end: int,
    size: int,
    trailer: TrailerState | None,
) -> McubootImage:
    for entry in protected:
        if entry.type in UNPROTECTED_ALLOWED:
            raise MalformedError(
                f"MCUboot TLV 0x{entry.type:02x} must not be in the protected area"
            )
    for entry in unprotected:
        if entry.type not in UNPROTECTED_ALLOWED:
            raise MalformedError(
                f"MCUboot TLV 0x{entry.type:02x} is outside the hashed area (must be protected)"
            )
    everything = protected + unprotected
    for once in _ONCE:
        if sum(1 for e in everything if e.type == once) > 1:
            raise MalformedError(f"MCUboot TLV 0x{int(once):02x} appears more than once")
    hashes = [e for e in unprotected if e.type in HASH_TLVS]
    if len(hashes) != 1:
        raise MalformedError(
            "MCUboot image has no hash TLV" if not hashes else "MCUboot image has several hash TLVs"
        )
    hash_name = HASH_TLVS[TlvType(hashes[0].type)]
    if len(hashes[0].value) != _HASH_SIZES[hash_name]:
        raise MalformedError("MCUboot hash TLV has the wrong length")
    order = byte_order(header.endian)
    values = {e.type: e.value for e in everything}
    pure = TlvType.SIG_PURE in values
    if pure and values[TlvType.SIG_PURE] != b"\x01":
        raise MalformedError("MCUboot SIG_PURE TLV must be one byte 0x01")
    counter = None
    if TlvType.SEC_CNT in values:
        if len(values[TlvType.SEC_CNT]) != 4:
            raise MalformedError("MCUboot SEC_CNT TLV must be 4 bytes")
        counter = int.from_bytes(values[TlvType.SEC_CNT], order)
    created = None
    if TlvType.OTAGUARD_CREATED in values:
        if len(values[TlvType.OTAGUARD_CREATED]) != 8:
            raise MalformedError("otaguard creation-time TLV must be 8 bytes")
        created = int.from_bytes(values[TlvType.OTAGUARD_CREATED], order)
    hw_ids: tuple[str, ...] = ()
    if TlvType.OTAGUARD_HARDWARE_IDS in values:
        hw_ids = decode_hardware_ids(values[TlvType.OTAGUARD_HARDWARE_IDS])
    deps = tuple(
        Dependency.unpack(header.endian, e.value) for e in protected if e.type == TlvType.DEPENDENCY
    )
    chain = tuple(e.value for e in protected if e.type == TlvType.OTAGUARD_CERT)
    return McubootImage(
        header=header,
        protected=tuple(protected),
        unprotected=tuple(unprotected),
        tlv_end=tlv_end,
        file_size=size,
        hash_name=hash_name,
        hash_value=hashes[0].value,
        pure=pure,
        security_counter=counter,
        dependencies=deps,
        hardware_ids=hw_ids,
        created=created,
        cert_chain=chain,
        trailer=trailer,
    )


@dataclass(frozen=True)
class _Claim:
    """A signature TLV preceded by a KEYHASH/PUBKEY that names a trusted key."""

    key: PublicKey
    tlv_type: int
    signature: bytes


def _pair_signatures(image: McubootImage, trusted: TrustedKeys) -> list[_Claim]:
    """Step 2: MCUboot's rule, a signature belongs to the key TLV just before it."""
    by_hash = {
        hashlib.new(image.hash_name, key_material(k)).digest(): k for k in trusted.by_id.values()
    }
    by_material = {key_material(k): k for k in trusted.by_id.values()}
    claims: list[_Claim] = []
    signatures = 0
    current: PublicKey | None = None
    for entry in image.unprotected:
        if entry.type == TlvType.KEYHASH:
            current = by_hash.get(entry.value)
        elif entry.type == TlvType.PUBKEY:
            current = by_material.get(entry.value)
        elif entry.type in SIGNATURE_TLVS or entry.type == TlvType.ECDSA224:
            signatures += 1
            if current is not None:
                claims.append(_Claim(current, entry.type, entry.value))
            current = None
    if signatures == 0:
        raise SignatureError("MCUboot image carries no signature, only a hash: refused")
    if not claims:
        raise UnknownKeyError("MCUboot image is not signed by any trusted key")
    return claims


def _hash_region(
    stream: BinaryIO, image: McubootImage, names: set[str], sink: BinaryIO | None
) -> tuple[dict[str, bytes], bytes | None]:
    """Step 3's single pass: every digest needed, the payload to ``sink``."""
    header = image.header
    hashers = {name: hashlib.new(name) for name in names}
    region = bytearray() if image.pure else None
    if image.pure and header.protected_end > MAX_PURE_REGION:
        raise MalformedError("pure Ed25519 MCUboot image larger than 64 MiB is not supported")
    payload_start, payload_end = header.hdr_size, header.hdr_size + header.img_size
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    stream.seek(0)
    pos = 0
    while pos < header.protected_end:
        n = stream.readinto(view[: min(CHUNK_SIZE, header.protected_end - pos)])  # type: ignore[attr-defined]
        if not n:
            raise TruncatedError("truncated: MCUboot image shrank while being read")
        chunk = view[:n]
        for hasher in hashers.values():
            hasher.update(chunk)
        if region is not None:
            region.extend(chunk)
        if sink is not None:
            lo, hi = max(pos, payload_start), min(pos + n, payload_end)
            if lo < hi:
                sink.write(chunk[lo - pos : hi - pos])
        pos += n
    return {n: h.digest() for n, h in hashers.items()}, bytes(region) if region else None


def _check_signature(
    claim: _Claim, image: McubootImage, digests: dict[str, bytes], region: bytes | None
) -> None:
    key = claim.key
    if claim.tlv_type != signature_tlv(key):
        raise SignatureError(
            f"MCUboot signature TLV 0x{claim.tlv_type:02x} does not match the trusted key's type"
        )
    scheme = scheme_for_key(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        message = region if image.pure else digests[image.hash_name]
        assert message is not None
        verify_signature(key, scheme, message, claim.signature)
        return
    if image.pure:
        raise SignatureError("SIG_PURE is only defined for Ed25519")
    signature = claim.signature
    if isinstance(key, ec.EllipticCurvePublicKey) and len(signature) > 2:
        # imgtool --pad-sig pads the DER with zeros for MCUboot < 1.5.
        der_len = signature[1] + 2
        if any(signature[der_len:]):
            raise SignatureError("ECDSA signature has non-zero padding")
        signature = signature[:der_len]
    name = signature_hash(key)
    assert name is not None
    verify_prehashed(key, scheme, digests[name], signature)


def check_mcuboot_policy(image: McubootImage, policy: ImagePolicy) -> None:
    """Step 5, on authenticated TLVs only."""
    if policy.hardware_id is not None:
        if not image.hardware_ids:
            raise HardwareIdError(
                f"MCUboot image names no hardware id (otaguard TLV), {policy.hardware_id} required"
            )
        if policy.hardware_id not in image.hardware_ids:
            raise HardwareIdError(
                f"image is for {', '.join(image.hardware_ids)}, not {policy.hardware_id}"
            )
    floor = policy.min_security_counter
    if floor is not None:
        counter = image.security_counter
        if counter is None:
            raise SecurityCounterError("MCUboot image has no security counter (SEC_CNT)")
        if counter < floor or (policy.strict_counter and counter == floor):
            word = "not above" if policy.strict_counter else "below"
            raise SecurityCounterError(f"security counter {counter} is {word} {floor} (rollback)")
    if policy.min_version is not None:
        wanted = parse_version(policy.min_version)
        if image.header.version.boot_key < wanted.boot_key:
            raise VersionError(
                f"version {image.header.version} is older than {policy.min_version} "
                "(MCUboot compares major.minor.revision)"
            )
    if PayloadKind.FULL not in policy.allowed_kinds:
        raise PolicyError("payload kind full not accepted here")


def verify_mcuboot(
    stream: BinaryIO,
    trusted: TrustedKeys | McubootKeyResolver,
    *,
    threshold: int,
    policy: ImagePolicy,
    sink: BinaryIO | None = None,
    max_image_size: int | None = None,
    unsafe_precomputed_digest: PrecomputedDigest | None = None,
) -> VerifiedMcuboot:
    """Run steps 1-5 over the MCUboot image in ``stream`` (seekable, from offset 0).

    With ``sink``, payload bytes are written as they are hashed; they are only
    trustworthy if this returns, so the caller must make the sink atomic.
    ``unsafe_precomputed_digest``: as for ``verify_stream``, asked for the exact region
    the parsed header names, after the key pairing passed; UNSAFE unless proved (see
    :data:`~otaguard.image.trust.PrecomputedDigest`).
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    image = read_image(stream, max_image_size=max_image_size)
    if not isinstance(trusted, TrustedKeys):
        trusted = trusted(image)
    claims = _pair_signatures(image, trusted)
    names = {image.hash_name} | {n for c in claims if (n := signature_hash(c.key)) is not None}
    precomputed = None
    precompute = unsafe_precomputed_digest
    if precompute is not None and sink is None and not image.pure and names == {"sha256"}:
        precomputed = precompute(stream, 0, image.header.protected_end, "sha256")
    if precomputed is not None:
        digests, region = {"sha256": precomputed}, None
    else:
        digests, region = _hash_region(stream, image, names, sink)
    if not hmac.compare_digest(digests[image.hash_name], image.hash_value):
        raise DigestMismatchError("MCUboot image hash does not match (image modified)")
    signed_by: list[str] = []
    for claim in claims:
        _check_signature(claim, image, digests, region)
        kid = key_id(claim.key)
        if kid not in signed_by:
            signed_by.append(kid)
    if len(signed_by) < threshold:
        raise ThresholdError(f"{len(signed_by)} trusted key(s) signed, threshold is {threshold}")
    check_mcuboot_policy(image, policy)
    return VerifiedMcuboot(image, tuple(signed_by))


def describe_tlvs(entries: Sequence[TlvEntry]) -> list[dict[str, object]]:
    """For inspect: type names and sizes, values only where they are short."""
    out: list[dict[str, object]] = []
    for entry in entries:
        try:
            name = TlvType(entry.type).name
        except ValueError:
            name = f"0x{entry.type:04x}"
        item: dict[str, object] = {"type": name, "length": len(entry.value)}
        if len(entry.value) <= 64:
            item["value"] = entry.value.hex()
        out.append(item)
    return out
