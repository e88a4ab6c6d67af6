"""Exhaustive tampering and truncation: every change to a signed image is refused.

These are the tests that make "fails closed" concrete: each flips one bit (or
cuts the file at one length) and demands a RejectedError, so a verifier that
skipped any check, read a field without binding it to the signature, or
tolerated slack bytes would turn them red.
"""

from __future__ import annotations

import io
import random
import struct

import pytest

from helpers import cached_key, make_image
from otaguard.crypto.keys import KeyType, PrivateKey
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    RejectedError,
    TruncatedError,
)
from otaguard.image import ImagePolicy, TrustedKeys, verify_stream
from otaguard.image.envelope_format import PREAMBLE_SIZE

PAYLOAD = bytes(random.Random(7).randrange(256) for _ in range(4096))


def _verify(image: bytes, key: PrivateKey, *, seekable: bool = True) -> None:
    trusted = TrustedKeys.of([key.public_key()])
    stream: io.BufferedIOBase = io.BytesIO(image)
    if not seekable:
        stream = io.BufferedReader(_NoSeek(image))
    verify_stream(stream, trusted, threshold=1, policy=ImagePolicy())  # type: ignore[arg-type]


class _NoSeek(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._inner.readinto(buffer)


def _regions(image: bytes) -> tuple[int, int]:
    """(end of signed bytes, start of signature block)."""
    header_len = struct.unpack(">I", image[12:16])[0]
    signed_end = PREAMBLE_SIZE + header_len
    return signed_end, signed_end + len(PAYLOAD)


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_every_bit_of_header_and_signatures_is_protected(key_type: KeyType) -> None:
    key = cached_key(key_type)
    image = make_image(
        PAYLOAD, [key], annotations=[("git", "4f2a9c1")], hardware_ids=["acme-ecu-v2", "b"]
    )
    _verify(image, key)  # the untouched image is fine
    signed_end, sig_start = _regions(image)
    positions = list(range(signed_end)) + list(range(sig_start, len(image)))
    tried = 0
    for pos in positions:
        for bit in range(8):
            mutated = bytearray(image)
            mutated[pos] ^= 1 << bit
            with pytest.raises(RejectedError):
                _verify(bytes(mutated), key)
            tried += 1
    assert tried == 8 * len(positions) > 8 * 200


def test_thousand_random_payload_bits_are_caught() -> None:
    key = cached_key(KeyType.ED25519)
    image = make_image(PAYLOAD, [key])
    signed_end, sig_start = _regions(image)
    rng = random.Random(2026)
    for _ in range(1000):
        pos = rng.randrange(signed_end, sig_start)
        mutated = bytearray(image)
        mutated[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(DigestMismatchError):
            _verify(bytes(mutated), key)


@pytest.mark.parametrize("seekable", [True, False], ids=["file", "pipe"])
def test_truncation_at_every_length_is_a_clean_rejection(seekable: bool) -> None:
    key = cached_key(KeyType.ECDSA_P256)
    image = make_image(PAYLOAD[:300], [key])
    for length in range(len(image)):
        with pytest.raises((TruncatedError, MalformedError)):
            _verify(image[:length], key, seekable=seekable)
    _verify(image, key, seekable=seekable)


def test_appended_bytes_are_rejected_for_pipes_too() -> None:
    key = cached_key(KeyType.ED25519)
    image = make_image(b"fw", [key])
    for extra in (b"\x00", b"OSIG", bytes(70000)):
        with pytest.raises(MalformedError):
            _verify(image + extra, key, seekable=False)
        with pytest.raises(MalformedError):
            _verify(image + extra, key, seekable=True)
