"""MCUboot signing and verification in the library: every algorithm, thresholds, policy."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from helpers import cached_key
from helpers_mcuboot import rsa2048, sign_bytes, verify_image
from otaguard.crypto.keys import KeyType, PrivateKey
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
    UsageError,
    VersionError,
)
from otaguard.image import ImagePolicy, PayloadKind
from otaguard.image.mcuboot import McubootVersion, TlvType, parse_dependency, read_image
from otaguard.image.mcuboot_format import (
    TLV_INFO_MAGIC,
    encode_area,
    parse_header,
)

PAYLOAD = os.urandom(3000)

MCUBOOT_KEYS = {
    "ed25519": lambda: cached_key(KeyType.ED25519),
    "ecdsa-p256": lambda: cached_key(KeyType.ECDSA_P256),
    "ecdsa-p384": lambda: cached_key(KeyType.ECDSA_P384),
    "rsa-2048": rsa2048,
    "rsa-3072": lambda: cached_key(KeyType.RSA_3072),
}


@pytest.fixture(params=sorted(MCUBOOT_KEYS))
def mkey(request: pytest.FixtureRequest) -> PrivateKey:
    return MCUBOOT_KEYS[request.param]()


def test_round_trip_every_algorithm(mkey: PrivateKey, tmp_path: Path) -> None:
    image = sign_bytes(PAYLOAD, [mkey], tmp_path, security_counter=7)
    result = verify_image(image, [mkey])
    assert result.image.security_counter == 7
    assert result.image.header.version == McubootVersion(1, 2, 3, 4)
    assert result.image.header.img_size == len(PAYLOAD)
    assert image[0x200 : 0x200 + len(PAYLOAD)] == PAYLOAD


def test_wrong_key_is_unknown(mkey: PrivateKey, tmp_path: Path) -> None:
    image = sign_bytes(PAYLOAD, [mkey], tmp_path)
    other = cached_key(KeyType.ED25519, 1)
    with pytest.raises(UnknownKeyError):
        verify_image(image, [other])


def test_pure_ed25519(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path, pure=True)
    result = verify_image(image, [key])
    assert result.image.pure and result.image.hash_name == "sha512"
    with pytest.raises(UsageError):
        sign_bytes(PAYLOAD, [cached_key(KeyType.ECDSA_P256)], tmp_path, pure=True)


def test_rsa_4096_is_refused_for_mcuboot(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="RSA-2048 and RSA-3072"):
        sign_bytes(PAYLOAD, [cached_key(KeyType.RSA_4096)], tmp_path)


def test_threshold_two_of_three(tmp_path: Path) -> None:
    a, b, c = (cached_key(KeyType.ED25519, i) for i in range(3))
    image = sign_bytes(PAYLOAD, [a, b], tmp_path)
    assert len(verify_image(image, [a, b, c], threshold=2).signed_by) == 2
    with pytest.raises(ThresholdError):
        verify_image(image, [a, b, c], threshold=3)
    with pytest.raises(ThresholdError):
        verify_image(image, [a, c], threshold=2)


def test_mixed_hashes_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        sign_bytes(
            PAYLOAD,
            [cached_key(KeyType.ECDSA_P384), cached_key(KeyType.ED25519)],
            tmp_path,
        )


def test_policy_checks(tmp_path: Path) -> None:
    key = cached_key(KeyType.ECDSA_P256)
    image = sign_bytes(PAYLOAD, [key], tmp_path, security_counter=7, hardware_ids=("acme-ecu-v2",))
    ok = ImagePolicy(hardware_id="acme-ecu-v2", min_security_counter=7, min_version="1.2.3")
    assert verify_image(image, [key], policy=ok).image.hardware_ids == ("acme-ecu-v2",)
    with pytest.raises(HardwareIdError):
        verify_image(image, [key], policy=ImagePolicy(hardware_id="acme-ecu-v3"))
    with pytest.raises(SecurityCounterError):
        verify_image(image, [key], policy=ImagePolicy(min_security_counter=8))
    with pytest.raises(SecurityCounterError):
        verify_image(image, [key], policy=ImagePolicy(min_security_counter=7, strict_counter=True))
    with pytest.raises(VersionError):
        verify_image(image, [key], policy=ImagePolicy(min_version="1.3.0"))
    with pytest.raises(PolicyError):
        verify_image(image, [key], policy=ImagePolicy(allowed_kinds=frozenset({PayloadKind.DELTA})))


def test_missing_fields_fail_policy_closed(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    bare = sign_bytes(PAYLOAD, [key], tmp_path)
    with pytest.raises(HardwareIdError, match="names no hardware id"):
        verify_image(bare, [key], policy=ImagePolicy(hardware_id="acme-ecu-v2"))
    with pytest.raises(SecurityCounterError, match="no security counter"):
        verify_image(bare, [key], policy=ImagePolicy(min_security_counter=0))


def test_dependencies_and_trailer(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(
        PAYLOAD,
        [key],
        tmp_path,
        dependencies=(parse_dependency("1,2.0.0+3"),),
        slot_size=0x4000,
        pad=True,
        confirm=True,
        align=8,
    )
    assert len(image) == 0x4000
    result = verify_image(image, [key], max_image_size=0x4000)
    assert result.image.dependencies[0].image_id == 1
    assert result.image.dependencies[0].min_version == McubootVersion(2, 0, 0, 3)
    assert result.image.trailer is not None and result.image.trailer.image_ok is True


def test_slot_too_small(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="exceeds --slot-size"):
        sign_bytes(PAYLOAD, [cached_key(KeyType.ED25519)], tmp_path, slot_size=0xE00, pad=True)


def test_image_larger_than_slot_is_refused(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    with pytest.raises(TruncatedError, match="slot"):
        verify_image(image, [key], max_image_size=len(image) - 200)


def _with_unprotected(image: bytes, entries: list[tuple[int, bytes]], keep: int) -> bytes:
    """Rebuild the unprotected area keeping its first ``keep`` TLVs, then ``entries``."""
    header = parse_header(image)
    parsed = read_image(_io(image))
    kept = [(e.type, e.value) for e in parsed.unprotected[:keep]]
    return image[: header.protected_end] + encode_area("<", TLV_INFO_MAGIC, kept + entries)


def _io(data: bytes):
    import io

    return io.BytesIO(data)


def test_hash_only_image_is_refused(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    hash_only = _with_unprotected(image, [], keep=1)
    with pytest.raises(SignatureError, match="only a hash"):
        verify_image(hash_only, [key])


def test_signature_without_key_tlv_does_not_count(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    parsed = read_image(_io(image))
    sig = parsed.unprotected[2]
    orphan = _with_unprotected(image, [(sig.type, sig.value)], keep=1)
    with pytest.raises(UnknownKeyError):
        verify_image(orphan, [key])


def test_unprotected_security_counter_is_refused(tmp_path: Path) -> None:
    """An attacker must not add SEC_CNT (or anything else) outside the hash."""
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    forged = _with_unprotected(image, [(TlvType.SEC_CNT, struct.pack("<I", 99))], keep=3)
    with pytest.raises(MalformedError, match="must be protected"):
        verify_image(forged, [key])


def test_signature_type_must_match_trusted_key(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    parsed = read_image(_io(image))
    sig = parsed.unprotected[2]
    confused = _with_unprotected(image, [(TlvType.RSA2048_PSS, sig.value)], keep=2)
    with pytest.raises(SignatureError, match="does not match"):
        verify_image(confused, [key])


def test_two_hash_tlvs_refused(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = sign_bytes(PAYLOAD, [key], tmp_path)
    parsed = read_image(_io(image))
    twice = _with_unprotected(image, [(TlvType.SHA256, parsed.hash_value)], keep=3)
    with pytest.raises(MalformedError, match="several hash"):
        verify_image(twice, [key])


def test_payload_change_is_digest_mismatch(tmp_path: Path) -> None:
    key = cached_key(KeyType.ECDSA_P256)
    image = bytearray(sign_bytes(PAYLOAD, [key], tmp_path))
    image[0x300] ^= 1
    with pytest.raises(DigestMismatchError):
        verify_image(bytes(image), [key])


def test_hostile_image_size_is_bounded(tmp_path: Path) -> None:
    """MCUboot #2025: a corrupt ih_img_size must not make us hash for hours."""
    key = cached_key(KeyType.ED25519)
    image = bytearray(sign_bytes(PAYLOAD, [key], tmp_path))
    image[12:16] = struct.pack("<I", 0xFFFF0000)
    with pytest.raises(TruncatedError):
        verify_image(bytes(image), [key])


def test_encrypted_flag_refused(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    image = bytearray(sign_bytes(PAYLOAD, [key], tmp_path))
    image[16] |= 0x4
    with pytest.raises(PolicyError, match="encrypted"):
        verify_image(bytes(image), [key])


def test_big_endian_round_trip(tmp_path: Path) -> None:
    key = cached_key(KeyType.ECDSA_P256)
    image = sign_bytes(PAYLOAD, [key], tmp_path, endian=">", security_counter=5)
    assert image[:4] == bytes.fromhex("96f3b83d")
    assert verify_image(image, [key]).image.security_counter == 5


def test_version_range_checks() -> None:
    from otaguard.image.mcuboot import parse_version

    assert parse_version("1") == McubootVersion(1, 0, 0, 0)
    assert parse_version("255.255.65535+4294967295").build == 4294967295
    for bad in ("256.0.0", "1.256.0", "1.0.65536", "1.0.0+4294967296", "1.x", "", "-1.0.0"):
        with pytest.raises(UsageError):
            parse_version(bad)


def test_parse_security_counter_as_imgtool_reads_it() -> None:
    from otaguard.errors import UsageError
    from otaguard.image.mcuboot import parse_security_counter, parse_version

    version = parse_version("1.2.3+4")
    assert parse_security_counter(None, version) is None
    assert parse_security_counter("auto", version) == (1 << 24) | (2 << 16) | 3
    assert parse_security_counter("0x10", version) == 16
    assert parse_security_counter("7", version) == 7
    with pytest.raises(UsageError, match="not an integer: 'seven'"):
        parse_security_counter("seven", version)
