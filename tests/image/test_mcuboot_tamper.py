"""Every bit of an MCUboot image's header, TLVs and signature matters; every truncation is clean."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import cached_key
from helpers_mcuboot import sign_bytes, verify_image
from otaguard.crypto.keys import KeyType
from otaguard.errors import OtaguardError, RejectedError
from otaguard.image import ImagePolicy, TrustedKeys
from otaguard.image.mcuboot import read_image, verify_mcuboot

HEADER = 0x40
PAYLOAD = bytes(range(256)) * 2


@pytest.fixture(scope="module", params=[KeyType.ED25519, KeyType.ECDSA_P256])
def signed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    key = cached_key(request.param)
    image = sign_bytes(
        PAYLOAD,
        [key],
        tmp_path_factory.mktemp("mcu"),
        header_size=HEADER,
        security_counter=3,
        hardware_ids=("acme-ecu-v2",),
    )
    verify_image(image, [key])  # the untouched image is good
    return key, image


def _metadata_offsets(image: bytes) -> list[int]:
    """Header (with its room), protected TLVs and the whole unprotected area."""
    parsed = read_image(io.BytesIO(image))
    header = parsed.header
    payload = range(header.hdr_size, header.hdr_size + header.img_size)
    return [i for i in range(parsed.tlv_end) if i not in payload]


def test_every_metadata_bit_flip_is_rejected(signed) -> None:
    key, image = signed
    offsets = _metadata_offsets(image)
    assert len(offsets) > 200
    for offset in offsets:
        for bit in range(8):
            bad = bytearray(image)
            bad[offset] ^= 1 << bit
            with pytest.raises(RejectedError):
                verify_image(bytes(bad), [key])


def test_random_payload_bit_flips_are_rejected(signed) -> None:
    key, image = signed
    rng = random.Random(2026)
    for _ in range(1000):
        bad = bytearray(image)
        bad[HEADER + rng.randrange(len(PAYLOAD))] ^= 1 << rng.randrange(8)
        with pytest.raises(RejectedError):
            verify_image(bytes(bad), [key])


def test_every_truncation_is_a_clean_rejection(signed) -> None:
    key, image = signed
    for length in range(len(image)):
        with pytest.raises(RejectedError):
            verify_image(image[:length], [key])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048))
def test_parser_on_garbage_raises_only_our_errors(data: bytes) -> None:
    try:
        read_image(io.BytesIO(data))
    except OtaguardError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=8
    ),
    cut=st.integers(min_value=0, max_value=2_000),
)
def test_mutated_images_raise_only_our_errors(edits: list[tuple[int, int]], cut: int) -> None:
    """Structure-aware fuzzing: start from a valid image, overwrite bytes, cut the tail."""
    key = cached_key(KeyType.ED25519)
    image = bytearray(_VALID)
    for pos, value in edits:
        image[pos % len(image)] = value
    data = bytes(image[: max(0, len(image) - cut)])
    try:
        verify_mcuboot(
            io.BytesIO(data),
            TrustedKeys.of([key.public_key()]),
            threshold=1,
            policy=ImagePolicy(hardware_id="acme-ecu-v2"),
        )
    except OtaguardError:
        pass


def _valid_image() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return sign_bytes(
            PAYLOAD,
            [cached_key(KeyType.ED25519)],
            Path(tmp),
            header_size=HEADER,
            security_counter=1,
            hardware_ids=("acme-ecu-v2",),
            dependencies=(),
        )


_VALID = _valid_image()
