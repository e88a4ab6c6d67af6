"""Format detection and the claimed layout (``image/sniff.py``): right on real images,
never anything but our own errors (``detect``) or ``None`` (``layout``) on other bytes."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import cached_key, make_image
from helpers_mcuboot import sign_bytes
from otaguard.crypto.keys import KeyType
from otaguard.errors import MalformedError, OtaguardError, TruncatedError
from otaguard.image import HashAlgorithm, sniff
from otaguard.image.envelope_verify import read_protected
from otaguard.image.mcuboot_verify import read_image


def test_native_image_and_its_payload_range() -> None:
    payload = os.urandom(5000)
    for algorithm in HashAlgorithm:
        image = make_image(payload, [cached_key(KeyType.ED25519)], digest_algorithm=algorithm)
        assert sniff.detect(image[: sniff.DETECT_SIZE]) == sniff.NATIVE
        found = sniff.layout(image[: sniff.LAYOUT_SIZE])
        assert found is not None and found.format == sniff.NATIVE
        signed, meta = read_protected(io.BytesIO(image))
        assert (found.payload_offset, found.payload_length) == (len(signed), len(payload))
        assert (found.digest_offset, found.digest_length) == (len(signed), len(payload))
        assert found.digest_algorithm == algorithm.hashlib_name
        region = image[found.digest_offset : found.digest_offset + found.digest_length]
        assert hashlib.new(found.digest_algorithm, region).digest() == meta.payload_digest.value


@pytest.mark.parametrize("endian", ["<", ">"])
def test_mcuboot_image_and_its_hashed_region(tmp_path: Path, endian: str) -> None:
    payload = os.urandom(3000)
    image = sign_bytes(payload, [cached_key(KeyType.ECDSA_P256)], tmp_path, endian=endian)
    assert sniff.detect(image[: sniff.DETECT_SIZE]) == sniff.MCUBOOT
    found = sniff.layout(image[: sniff.LAYOUT_SIZE])
    parsed = read_image(io.BytesIO(image))
    assert found is not None and found.format == sniff.MCUBOOT
    assert (found.payload_offset, found.payload_length) == (0x200, len(payload))
    assert (found.digest_offset, found.digest_length) == (0, parsed.header.protected_end)
    assert found.digest_algorithm is None  # named by the TLV area, not the header
    assert hashlib.sha256(image[: found.digest_length]).digest() == parsed.hash_value


def test_what_is_no_image_is_refused_with_the_reason() -> None:
    for short in (b"", b"OTAG", b"x" * 7):
        with pytest.raises(TruncatedError, match="too short to be an image"):
            sniff.detect(short)
    with pytest.raises(MalformedError, match="unknown magic") as caught:
        sniff.detect(b"\x7fELF\x02\x01\x01\x00")
    assert not isinstance(caught.value, TruncatedError)
    assert sniff.layout(b"\x7fELF" + bytes(60)) is None
    assert sniff.layout(b"OTAGUARD" + bytes(20)) is None  # too short to tell
    # the first two TLVs are not PAYLOAD_LENGTH and PAYLOAD_DIGEST: no claim is read
    image = make_image(b"x" * 100, [cached_key(KeyType.ED25519)])
    assert sniff.layout(image[:16] + b"\x00\x03" + image[18:64]) is None
    assert sniff.layout(image[:36] + b"\x09" + image[37:64]) is None  # unknown digest


@settings(max_examples=2000, deadline=None)
@given(head=st.binary(max_size=80), magic=st.sampled_from([b"", b"OTAGUARD", b"\x3d\xb8\xf3\x96"]))
def test_arbitrary_bytes_give_our_errors_or_none(head: bytes, magic: bytes) -> None:
    data = magic + head
    try:
        fmt = sniff.detect(data[: sniff.DETECT_SIZE])
    except OtaguardError as exc:
        assert isinstance(exc, MalformedError)
    else:
        assert fmt in (sniff.NATIVE, sniff.MCUBOOT)
    found = sniff.layout(data[: sniff.LAYOUT_SIZE])
    if found is not None:
        assert found.format in (sniff.NATIVE, sniff.MCUBOOT)
        assert min(found.payload_offset, found.payload_length, found.digest_length) >= 0


@given(header_len=st.integers(0, 2**32 - 1), length=st.integers(0, 2**64 - 1))
def test_native_claims_are_read_as_written(header_len: int, length: int) -> None:
    head = b"OTAGUARD\x00\x01\x00\x00" + struct.pack(">I", header_len)
    head += (
        b"\x00\x01\x00\x00\x00\x08" + struct.pack(">Q", length) + b"\x00\x02\x00\x00\x00\x21\x01"
    )
    found = sniff.layout(head + bytes(27))
    assert found is not None
    assert (found.payload_offset, found.payload_length) == (16 + header_len, length)
    assert found.digest_algorithm == "sha256"


def test_sniff_loads_nothing_before_the_prefetch_fork() -> None:
    """The prefetch calls it before forking: no typing, dataclasses, enum or errors."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import otaguard.image.sniff\n"
        "new = set(sys.modules) - before\n"
        "print(' '.join(sorted(new)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"typing", "dataclasses", "enum", "otaguard.errors"} & set(out), out
