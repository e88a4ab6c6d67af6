"""Signing the native envelope in one streaming pass over the payload.

The protected header's size does not depend on the payload (its length and
digest fields are fixed-size), so the signer reserves the header's room,
streams the payload behind it while hashing, then writes the header and
appends the signatures. The source is read exactly once and may be a pipe;
memory use is one copy buffer, whatever the image size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import BinaryIO

from otaguard.crypto.keys import key_id_bytes
from otaguard.crypto.signer import Signer
from otaguard.errors import MalformedError, UsageError
from otaguard.image.envelope_format import (
    MAX_PAYLOAD_LENGTH,
    MAX_SIGNATURES,
    Digest,
    HashAlgorithm,
    ImageMetadata,
    SignatureEntry,
    encode_protected,
    encode_signature_block,
)
from otaguard.image.kinds import PayloadKind

#: 128 KiB: measured fastest here (the buffer stays in L2 while it is hashed).
CHUNK_SIZE = 1 << 17


def parse_annotations(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` texts as sorted (key, value) pairs, each key once.

    Why here: whoever builds a release (the CLI today, a release upload later) must refuse
    the same malformed or repeated annotation, or the two would sign different images.
    """
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotate takes KEY=VALUE, got {pair!r}")
        if key in result:
            raise UsageError(f"annotation {key!r} given twice")
        result[key] = value
    return sorted(result.items())


def sign_protected(signed: bytes, signers: Sequence[Signer]) -> bytes:
    """Sign the preamble + protected header with each signer; return the signature block."""
    if not 1 <= len(signers) <= MAX_SIGNATURES:
        raise UsageError(f"give 1 to {MAX_SIGNATURES} signing keys")
    entries = []
    for signer in signers:
        entries.append(
            SignatureEntry(
                scheme=int(signer.scheme),
                key_id=key_id_bytes(signer.public_key),
                signature=signer.sign(signed),
            )
        )
    if len({e.key_id for e in entries}) != len(entries):
        raise UsageError("the same key was given twice")
    return encode_signature_block(entries)


def sign_stream(
    source: BinaryIO,
    dest: BinaryIO,
    signers: Sequence[Signer],
    *,
    version: str,
    security_counter: int,
    hardware_ids: Sequence[str],
    created: int,
    annotations: Sequence[tuple[str, str]] = (),
    digest_algorithm: HashAlgorithm = HashAlgorithm.SHA256,
    payload_kind: PayloadKind = PayloadKind.FULL,
    delta_base: Digest | None = None,
    cert_chain: Sequence[bytes] = (),
) -> ImageMetadata:
    """Read the payload from ``source`` once and write a signed envelope to ``dest``.

    ``dest`` must be seekable (the header is filled in after the payload has
    been hashed); the caller makes it atomic. ``created`` is an explicit
    input so that builds can be reproducible (``SOURCE_DATE_EPOCH``).
    """
    if not signers:
        raise UsageError("at least one signing key is needed")
    try:
        draft = ImageMetadata(
            version=version,
            security_counter=security_counter,
            hardware_ids=tuple(hardware_ids),
            payload_length=0,
            payload_digest=Digest(digest_algorithm, bytes(digest_algorithm.size)),
            created=created,
            payload_kind=payload_kind,
            delta_base=delta_base,
            annotations=tuple(sorted(annotations)),
            cert_chain=tuple(cert_chain),
        )
    except MalformedError as exc:
        raise UsageError(str(exc)) from exc
    reserved = len(encode_protected(draft))

    dest.seek(reserved)
    hasher = hashlib.new(digest_algorithm.hashlib_name)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    length = 0
    while True:
        n = source.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        chunk = view[:n]
        hasher.update(chunk)
        dest.write(chunk)
        length += n
        if length > MAX_PAYLOAD_LENGTH:
            raise UsageError("payload larger than the format allows")

    meta = replace(
        draft,
        payload_length=length,
        payload_digest=Digest(digest_algorithm, hasher.digest()),
    )
    signed = encode_protected(meta)
    if len(signed) != reserved:  # pragma: no cover - the format keeps these fixed
        raise RuntimeError("protected header size changed while signing")
    signature_block = sign_protected(signed, signers)
    dest.seek(0)
    dest.write(signed)
    dest.seek(reserved + length)
    dest.write(signature_block)
    dest.truncate()
    return meta
