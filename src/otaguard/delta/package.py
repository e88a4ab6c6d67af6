"""The signed delta: a native envelope of kind DELTA whose payload is the container.

``create`` signs the container with the release key(s) that signed the new
image (a device verifies the delta and the image inside with the same trusted
keys), after checking both images (:func:`create`). The outer
header copies the new image's version, security counter and hardware ids, so
a device's policy (anti-rollback, hardware id) refuses a delta before reading
its payload, and names the base in DELTA_BASE (SHA-256 of the whole old image
file). The container carries the new image's own signed header and signature
block, so the device ends up with exactly the image the release managers
signed, and verifies *that* as usual.

``open_delta`` runs every check that needs no old image and writes nothing:
outer envelope (when trust is given: signatures, policy, payload digest),
container header, consistency of outer and inner metadata, and the inner
image's signatures. The caller then runs :func:`check_base` and only then
starts consuming :class:`Reconstruction`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import mmap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from otaguard.crypto.keys import key_id, key_id_bytes
from otaguard.crypto.signer import Signer
from otaguard.delta.apply import ReadAt, Reconstruction, check_base
from otaguard.delta.engine import DeltaStats, create_container
from otaguard.delta.format import DEFAULT_CHUNK_SIZE, DeltaHeader, header_dictionary, read_header
from otaguard.delta.predict import Arch
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    PolicyError,
    RejectedError,
    TruncatedError,
    UsageError,
)
from otaguard.image import (
    Digest,
    HashAlgorithm,
    ImageMetadata,
    ImagePolicy,
    PayloadKind,
    TrustedKeys,
    check_policy,
    sign_stream,
    verify_stream,
)
from otaguard.image.envelope_format import (
    MAX_HEADER_SIZE,
    MAX_SIG_BLOCK_SIZE,
    parse_protected,
    parse_signature_block,
)
from otaguard.image.envelope_verify import KeyResolver, read_protected, verify_signatures

#: The container header: fixed fields, the new image's header and its signature block
#: (deflated: at most about 1/1000 larger than raw) and the stream lengths.
MAX_CONTAINER_HEADER = 256 + 2 * (16 + MAX_HEADER_SIZE + MAX_SIG_BLOCK_SIZE)


@dataclass(frozen=True)
class SplitImage:
    """A native envelope cut into its three parts (parsed strictly, not verified)."""

    signed: bytes
    metadata: ImageMetadata
    payload: memoryview
    signatures: bytes


def split_image(image: bytes | mmap.mmap, what: str = "the new image") -> SplitImage:
    """``image`` (a whole full image file) cut into its parts; its structure is checked.

    ``what`` names the image in the errors, which keep their class (a refusal).
    """
    try:
        stream = io.BytesIO(image[: 16 + (1 << 20) + 16])
        signed, meta = read_protected(stream)
        end = len(signed) + meta.payload_length
        if end > len(image):
            raise TruncatedError("truncated: shorter than its payload length")
        signatures = bytes(image[end:])
        parse_signature_block(signatures)
        if meta.payload_kind is not PayloadKind.FULL:
            raise MalformedError("must be a full image, not a delta")
    except RejectedError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    return SplitImage(signed, meta, memoryview(image)[len(signed) : end], signatures)


def check_new_image(image: SplitImage, signers: Sequence[Signer]) -> None:
    """Refuse a new image no device would accept from this delta, before anything is written.

    Its payload must match its signed digest (else every apply ends in a digest error),
    and every delta key must have signed it: a device checks the delta and the image it
    rebuilds with the same trusted keys, so one that trusts only a delta key the image
    does not carry refuses the image.
    """
    meta = image.metadata
    digest = hashlib.new(meta.payload_digest.algorithm.hashlib_name, image.payload).digest()
    if not hmac.compare_digest(digest, meta.payload_digest.value):
        raise DigestMismatchError("the new image: its payload does not match its signed digest")
    entries = parse_signature_block(image.signatures)
    carried = {entry.key_id for entry in entries}
    keys = [signer.public_key for signer in signers]
    for key in keys:
        if key_id_bytes(key) not in carried:
            raise UsageError(
                f"the delta key {key_id(key)[:16]} did not sign the new image: devices that "
                "trust only it would refuse the image the delta rebuilds (sign the delta with "
                "the new image's key)"
            )
    trusted = TrustedKeys.of(keys)
    try:
        verify_signatures(image.signed, entries, trusted, threshold=len(trusted))
    except RejectedError as exc:
        raise type(exc)(f"the new image: {exc}") from None


def create(
    old: bytes | mmap.mmap,
    new: bytes | mmap.mmap,
    dest: BinaryIO,
    signers: Sequence[Signer],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    fallback_ratio: float | None = None,
    zstd: bool | None = None,
    predictor: Arch | None = None,
    load_address: int | None = None,
    join: bool = True,
) -> tuple[ImageMetadata, DeltaStats]:
    """Write the signed delta from ``old`` to ``new`` (whole image files) to seekable ``dest``.

    Nothing is written unless a device could apply it: both images must be full native
    images (structure checked), the new image's payload must match its digest and every
    signer must have signed the new image (:func:`check_new_image`).
    """
    image = split_image(new)
    split_image(old, "the old image (the delta's base)")
    check_new_image(image, signers)
    meta = image.metadata
    kwargs = {} if fallback_ratio is None else {"fallback_ratio": fallback_ratio}
    # hashing releases the GIL: the base digest is computed while the suffix sort runs
    with ThreadPoolExecutor(max_workers=1) as pool:
        base = pool.submit(_sha256, old)
        parts, stats = create_container(
            old,
            image.signed,
            image.payload,
            image.signatures,
            zdict=header_dictionary(meta, [key_id_bytes(s.public_key) for s in signers]),
            chunk_size=chunk_size,
            zstd=zstd,
            predictor=predictor,
            load_address=load_address,
            join=join,
            **kwargs,  # type: ignore[arg-type]
        )
        base_sha256 = base.result()
    signed = sign_stream(
        io.BytesIO(b"".join(parts)),
        dest,
        signers,
        version=meta.version,
        security_counter=meta.security_counter,
        hardware_ids=meta.hardware_ids,
        created=meta.created,
        payload_kind=PayloadKind.DELTA,
        delta_base=Digest(HashAlgorithm.SHA256, base_sha256),
    )
    return signed, stats


def _sha256(data: bytes | mmap.mmap) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class OpenedDelta:
    """A delta whose every old-image-independent check passed (see the module doc)."""

    outer: ImageMetadata
    inner: ImageMetadata
    header: DeltaHeader
    payload_offset: int
    authenticated: bool
    zdict: bytes  # the deflate dictionary of the new image's header (from the envelope)


def open_delta(
    stream: BinaryIO,
    trusted: TrustedKeys | KeyResolver | None,
    *,
    policy: ImagePolicy | None = None,
    inner_policy: ImagePolicy | None = None,
) -> OpenedDelta:
    """Check the delta envelope at offset 0 of seekable ``stream``; writes nothing."""
    stream.seek(0)
    if trusted is not None:
        result = verify_stream(
            stream,
            trusted,
            threshold=1,
            policy=policy or ImagePolicy(allowed_kinds=frozenset({PayloadKind.DELTA})),
        )
        outer, offset = result.metadata, result.payload_offset
    else:  # structure only (and the payload digest): the caller verifies the rebuilt image
        signed, outer = read_protected(stream)
        offset = len(signed)
    stream.seek(offset + outer.payload_length)
    outer_entries = parse_signature_block(stream.read(MAX_SIG_BLOCK_SIZE + 1))
    if outer.payload_kind is not PayloadKind.DELTA or outer.delta_base is None:
        raise PolicyError("this is a full image, not a delta")
    base = outer.delta_base
    if base.algorithm is not HashAlgorithm.SHA256:
        raise MalformedError("delta: the base digest is not a SHA-256")
    if trusted is None:
        _check_payload_digest(stream, offset, outer)
    zdict = header_dictionary(outer, [e.key_id for e in outer_entries])
    header = _read_container_header(stream, offset, outer.payload_length, zdict, base.value)
    inner = parse_protected(header.new_signed)
    entries = parse_signature_block(header.new_signatures)
    if inner.payload_kind is not PayloadKind.FULL:
        raise MalformedError("delta: the image it rebuilds is not a full image")
    layout = stream.tell() - offset + header.table_length + header.streams_length
    if layout > outer.payload_length:  # the chunk table follows from the payload length
        raise TruncatedError("truncated: the delta ends inside its chunk table or streams")
    if layout < outer.payload_length:
        raise MalformedError(
            "delta: the new image's payload length, the chunk table and the streams do not "
            "add up to the container"
        )
    same = (outer.version, outer.security_counter, outer.hardware_ids)
    if same != (inner.version, inner.security_counter, inner.hardware_ids):
        raise MalformedError("delta: its version, counter or hardware ids differ from the image's")
    if trusted is not None:
        keys = trusted if isinstance(trusted, TrustedKeys) else trusted(inner)
        verify_signatures(header.new_signed, entries, keys, threshold=1)
        check_policy(inner, inner_policy or ImagePolicy())
    return OpenedDelta(outer, inner, header, offset, trusted is not None, zdict)


def _check_payload_digest(stream: BinaryIO, offset: int, outer: ImageMetadata) -> None:
    """Without trust, still check the container against the envelope's payload digest."""
    hasher = hashlib.new(outer.payload_digest.algorithm.hashlib_name)
    stream.seek(offset)
    left = outer.payload_length
    while left:
        data = stream.read(min(1 << 20, left))
        if not data:
            raise TruncatedError("truncated: the delta ends inside its payload")
        hasher.update(data)
        left -= len(data)
    if not hmac.compare_digest(hasher.digest(), outer.payload_digest.value):
        raise DigestMismatchError("the delta's payload does not match its digest")


def _read_container_header(
    stream: BinaryIO, offset: int, length: int, zdict: bytes, base_sha256: bytes
) -> DeltaHeader:
    """Parse the container header from the payload only (never from the signature block)."""
    stream.seek(offset)
    window = io.BytesIO(stream.read(min(length, MAX_CONTAINER_HEADER)))
    header = read_header(window, zdict=zdict, base_sha256=base_sha256)
    stream.seek(offset + window.tell())
    return header


def reconstruct(
    opened: OpenedDelta,
    stream: BinaryIO,
    old_length: int,
    read_at: ReadAt,
    *,
    written: ReadAt | None = None,
) -> Reconstruction:
    """Check the base (reads the old image, writes nothing), then return the new image's reader.

    ``written`` reads what an earlier, interrupted run left where the new image
    goes: the chunks found intact there are not decoded again (see ``apply``).
    """
    check_base(opened.header, old_length, read_at)
    _read_container_header(
        stream,
        opened.payload_offset,
        opened.outer.payload_length,
        opened.zdict,
        opened.header.base_sha256,
    )
    return Reconstruction(
        opened.header,
        stream,
        opened.payload_offset + opened.outer.payload_length,
        read_at,
        written=written,
    )
