"""``verify_any``: one call for callers that take both formats (CLI, repository, agent)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers import cached_key, make_image
from helpers_mcuboot import sign_bytes
from helpers_pki import DAY, HW, NOW, der, make_pki, sign_image
from otaguard import errors
from otaguard.crypto.keys import KeyType, key_id
from otaguard.image import ImagePolicy, TrustedKeys, VerifiedImage, sniff, verify_any
from otaguard.image.any_format import detect_stream
from otaguard.image.describe import inspect_fields, verified_fields
from otaguard.image.mcuboot import VerifiedMcuboot
from otaguard.pki.image_trust import TrustedRoots, verify_any_with_roots
from otaguard.pki.issue import Revocation, build_crl

if TYPE_CHECKING:
    from otaguard.image.any_format import VerifiedAny

KEY = cached_key(KeyType.ECDSA_P256)
TRUSTED = TrustedKeys.of([KEY.public_key()])


def _verify(image: bytes, **kw: Any) -> VerifiedAny:
    return verify_any(io.BytesIO(image), TRUSTED, threshold=1, policy=ImagePolicy(), **kw)


def test_both_formats_verify_and_say_which(tmp_path: Path) -> None:
    native = make_image(b"n" * 999, [KEY], version="1.4.0", security_counter=7)
    result = verify_any(io.BytesIO(native), TRUSTED, threshold=1, policy=ImagePolicy())
    assert isinstance(result, VerifiedImage) and result.format == sniff.NATIVE
    assert (result.metadata.version, result.metadata.security_counter) == ("1.4.0", 7)
    assert result.signed_by == (key_id(KEY.public_key()),)
    mcu = sign_bytes(b"m" * 999, [KEY], tmp_path, security_counter=3, hardware_ids=("hw-1",))
    result = verify_any(io.BytesIO(mcu), TRUSTED, threshold=1, policy=ImagePolicy())
    assert isinstance(result, VerifiedMcuboot) and result.format == sniff.MCUBOOT
    assert (str(result.image.header.version), result.image.security_counter) == ("1.2.3+4", 3)
    assert result.image.hardware_ids == ("hw-1",)


def test_refusals_are_the_formats_own(tmp_path: Path) -> None:
    other = TrustedKeys.of([cached_key(KeyType.ED25519).public_key()])
    for image in (make_image(b"x" * 500, [KEY]), sign_bytes(b"x" * 500, [KEY], tmp_path)):
        with pytest.raises(errors.UnknownKeyError):
            verify_any(io.BytesIO(image), other, threshold=1, policy=ImagePolicy())
        flipped = bytearray(image)
        flipped[len(image) // 2] ^= 1
        with pytest.raises((errors.DigestMismatchError, errors.MalformedError)):
            _verify(bytes(flipped))
    with pytest.raises(errors.TruncatedError):
        _verify(b"OTA")
    with pytest.raises(errors.MalformedError, match="unknown magic"):
        _verify(b"\x7fELF" + bytes(100))


def test_a_format_the_caller_names_is_parsed_as_that(tmp_path: Path) -> None:
    mcu = sign_bytes(b"m" * 300, [KEY], tmp_path)
    assert _verify(mcu, fmt=sniff.MCUBOOT).format == sniff.MCUBOOT
    with pytest.raises(errors.MalformedError):  # an MCUboot image is no envelope
        _verify(mcu, fmt=sniff.NATIVE)
    with pytest.raises(ValueError, match="unknown image format"):
        _verify(mcu, fmt="elf")


def test_the_payload_goes_to_the_sink_of_either_format(tmp_path: Path) -> None:
    payload = os.urandom(4000)
    for image in (make_image(payload, [KEY]), sign_bytes(payload, [KEY], tmp_path)):
        sink = io.BytesIO()
        _verify(image, sink=sink)
        assert sink.getvalue() == payload


def test_a_precomputed_digest_is_what_the_verifier_compares() -> None:
    """Why the parameter says UNSAFE: a wrong 'precomputed' digest decides the verdict."""
    image = make_image(b"p" * 700, [KEY])
    asked: list[tuple[int, int, str]] = []

    def wrong(stream: object, offset: int, length: int, algorithm: str) -> bytes:
        asked.append((offset, length, algorithm))
        return bytes(32)

    with pytest.raises(errors.DigestMismatchError):
        _verify(image, unsafe_precomputed_digest=wrong)
    found = sniff.layout(image[: sniff.LAYOUT_SIZE])
    assert found is not None
    assert asked == [(found.digest_offset, found.digest_length, "sha256")]


def test_roots_verify_either_format_and_give_the_chain(tmp_path: Path) -> None:
    pki = make_pki()
    chain = der(pki.leaf.cert, pki.inter.cert)
    trusted = TrustedRoots((pki.root.cert,), region="eu")
    native = sign_image(pki.leaf.signer, chain)
    mcu = sign_bytes(
        b"m" * 400,
        [cached_key(KeyType.ED25519, 10)],  # make_pki's leaf key
        tmp_path,
        cert_chain=tuple(chain),
        created=int(NOW.timestamp()),
        hardware_ids=(HW,),
    )
    for image, fmt in ((native, sniff.NATIVE), (mcu, sniff.MCUBOOT)):
        result, validated = verify_any_with_roots(
            io.BytesIO(image), trusted, policy=ImagePolicy(hardware_id=HW)
        )
        assert result.format == fmt and validated.leaf == pki.leaf.cert
        gone = [Revocation(pki.leaf.cert.serial_number, NOW, "key-compromise")]
        crl = build_crl(pki.inter, gone, this_update=NOW, next_update=NOW + DAY, number=1)
        revoked = TrustedRoots((pki.root.cert,), (crl,), "eu")
        with pytest.raises(errors.RevokedError):
            verify_any_with_roots(io.BytesIO(image), revoked, policy=ImagePolicy())
        with pytest.raises(errors.ChainError):  # another root: the chain leads nowhere trusted
            verify_any_with_roots(
                io.BytesIO(image),
                TrustedRoots((make_pki(root_index=11).root.cert,)),
                policy=ImagePolicy(),
            )


def test_descriptions_of_both_formats(tmp_path: Path) -> None:
    """``image/describe.py``: what verify --json and inspect print, from the library."""
    native = make_image(b"d" * 300, [KEY], version="2.0.0", annotations=[("git", "abc")])
    mcu = sign_bytes(b"d" * 300, [KEY], tmp_path, hardware_ids=("hw-1",))
    for image, extra in ((native, "signatures"), (mcu, "tlvs")):
        verified = verified_fields(_verify(image))
        inspected = inspect_fields(io.BytesIO(image), detect_stream(io.BytesIO(image)))
        assert verified.items() <= inspected.items() and extra in inspected
        assert extra not in verified  # signatures and TLVs are shown only by inspection
    assert verified_fields(_verify(native))["annotations"] == {"git": "abc"}
    assert verified_fields(_verify(mcu))["hardware_ids"] == ["hw-1"]
