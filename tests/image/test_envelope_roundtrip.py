"""Native envelope: round trips, thresholds, policy, and the format's strict rules."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

from helpers import cached_key, make_image, verify_bytes
from otaguard.crypto.keys import KeyType, PrivateKey, key_id
from otaguard.crypto.signer import KeySigner
from otaguard.errors import (
    HardwareIdError,
    MalformedError,
    PolicyError,
    SecurityCounterError,
    SignatureError,
    ThresholdError,
    UnknownKeyError,
    UsageError,
)
from otaguard.image import (
    Digest,
    HashAlgorithm,
    ImageMetadata,
    ImagePolicy,
    PayloadKind,
    TrustedKeys,
    VerifiedImage,
    inspect_stream,
    verify_stream,
)
from otaguard.image.envelope_format import (
    PREAMBLE_SIZE,
    SignatureEntry,
    encode_protected,
    encode_signature_block,
    parse_protected,
)
from otaguard.image.envelope_sign import sign_protected

ED = KeyType.ED25519


class _Pipe(io.RawIOBase):
    """A non-seekable stream, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)


def test_round_trip_every_algorithm(any_key: PrivateKey) -> None:
    payload = bytes(range(256)) * 40
    image = make_image(payload, [any_key], annotations=[("git", "4f2a9c1"), ("build", "ci-17")])
    result = verify_bytes(image, [any_key])
    assert isinstance(result, VerifiedImage)
    meta = result.metadata
    assert meta.version == "1.4.0"
    assert meta.security_counter == 7
    assert meta.hardware_ids == ("acme-ecu-v2",)
    assert meta.payload_length == len(payload)
    assert meta.annotations == (("build", "ci-17"), ("git", "4f2a9c1"))
    assert result.signed_by == (key_id(any_key.public_key()),)
    assert image[result.payload_offset : result.payload_offset + len(payload)] == payload


def test_sink_receives_exact_payload_from_pipe() -> None:
    key = cached_key(ED)
    payload = b"\x5a" * (3 * 1024 * 1024 + 17)  # spans several copy chunks
    image = make_image(payload, [key], digest_algorithm=HashAlgorithm.SHA512)
    sink = io.BytesIO()
    trusted = TrustedKeys.of([key.public_key()])
    result = verify_stream(_Pipe(image), trusted, threshold=1, policy=ImagePolicy(), sink=sink)  # type: ignore[arg-type]
    assert sink.getvalue() == payload
    assert result.metadata.payload_digest.algorithm is HashAlgorithm.SHA512


def test_signing_from_a_pipe_reads_source_once() -> None:
    key = cached_key(ED)
    out = io.BytesIO()
    from otaguard.image import sign_stream

    sign_stream(
        _Pipe(b"abc" * 1000),  # type: ignore[arg-type]
        out,
        [KeySigner(key)],
        version="1.0.0",
        security_counter=1,
        hardware_ids=["hw"],
        created=0,
    )
    assert verify_bytes(out.getvalue(), [key])


def test_empty_payload_round_trips() -> None:
    key = cached_key(ED)
    result = verify_bytes(make_image(b"", [key]), [key])
    assert isinstance(result, VerifiedImage) and result.metadata.payload_length == 0


def test_threshold_two_of_three() -> None:
    keys = [cached_key(ED, 0), cached_key(KeyType.ECDSA_P256, 0), cached_key(KeyType.RSA_3072, 0)]
    two_signed = make_image(b"fw", keys[:2])
    result = verify_bytes(two_signed, keys, threshold=2)
    assert isinstance(result, VerifiedImage) and len(result.signed_by) == 2
    one_signed = make_image(b"fw", keys[:1])
    with pytest.raises(ThresholdError, match="1 of the required 2"):
        verify_bytes(one_signed, keys, threshold=2)
    # A signature by a key outside the trusted set does not count towards it.
    outsider = cached_key(ED, 5)
    with pytest.raises(ThresholdError):
        verify_bytes(make_image(b"fw", [keys[0], outsider]), keys, threshold=2)
    assert verify_bytes(make_image(b"fw", keys), keys, threshold=3)


def test_only_untrusted_signatures_is_unknown_key() -> None:
    image = make_image(b"fw", [cached_key(ED, 1)])
    with pytest.raises(UnknownKeyError):
        verify_bytes(image, [cached_key(ED, 0)])


def test_threshold_and_trusted_set_are_validated() -> None:
    image = make_image(b"fw", [cached_key(ED)])
    with pytest.raises(ValueError, match="at least one trusted key"):
        verify_bytes(image, [])
    with pytest.raises(ValueError, match="threshold"):
        verify_bytes(image, [cached_key(ED)], threshold=2)
    with pytest.raises(ValueError, match="threshold"):
        verify_bytes(image, [cached_key(ED)], threshold=0)


def test_same_key_twice_cannot_sign() -> None:
    key = cached_key(ED)
    with pytest.raises(UsageError, match="twice"):
        make_image(b"fw", [key, key])


def test_duplicate_key_id_in_block_is_malformed() -> None:
    key = cached_key(ED)
    image = make_image(b"fw", [key])
    signed, rest = _split(image)
    sig = KeySigner(key).sign(signed)
    entry = SignatureEntry(1, bytes.fromhex(key_id(key.public_key())), sig)
    block = encode_signature_block([entry, entry])
    with pytest.raises(MalformedError, match="same key"):
        verify_bytes(signed + rest + block, [key])


def test_bad_signature_by_trusted_key_rejects_even_if_threshold_met() -> None:
    keys = [cached_key(ED, 0), cached_key(KeyType.ECDSA_P256, 0)]
    image = make_image(b"fw", keys)
    signed, payload = _split(image)
    good = KeySigner(keys[0]).sign(signed)
    bad = SignatureEntry(
        2, bytes.fromhex(key_id(keys[1].public_key())), b"\x30\x06\x02\x01\x01\x02\x01\x01"
    )
    block = encode_signature_block(
        [SignatureEntry(1, bytes.fromhex(key_id(keys[0].public_key())), good), bad]
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bytes(signed + payload + block, keys, threshold=1)


def test_scheme_confusion_is_rejected() -> None:
    key = cached_key(KeyType.ECDSA_P384)
    image = make_image(b"fw", [key])
    signed, payload = _split(image)
    sig = KeySigner(key).sign(signed)
    block = encode_signature_block(
        [SignatureEntry(2, bytes.fromhex(key_id(key.public_key())), sig)]
    )
    with pytest.raises(SignatureError, match="does not match the key"):
        verify_bytes(signed + payload + block, [key])
    block = encode_signature_block(
        [SignatureEntry(9, bytes.fromhex(key_id(key.public_key())), sig)]
    )
    with pytest.raises(SignatureError, match="unknown scheme"):
        verify_bytes(signed + payload + block, [key])


def test_policy_checks() -> None:
    key = cached_key(ED)
    image = make_image(
        b"fw", [key], hardware_ids=["acme-ecu-v2", "acme-ecu-v2b"], security_counter=5
    )
    assert verify_bytes(image, [key], policy=ImagePolicy(hardware_id="acme-ecu-v2b"))
    with pytest.raises(HardwareIdError):
        verify_bytes(image, [key], policy=ImagePolicy(hardware_id="acme-ecu-v3"))
    assert verify_bytes(image, [key], policy=ImagePolicy(min_security_counter=5))
    with pytest.raises(SecurityCounterError):
        verify_bytes(image, [key], policy=ImagePolicy(min_security_counter=6))
    with pytest.raises(SecurityCounterError):
        verify_bytes(image, [key], policy=ImagePolicy(min_security_counter=5, strict_counter=True))
    assert verify_bytes(
        image, [key], policy=ImagePolicy(min_security_counter=4, strict_counter=True)
    )
    with pytest.raises(PolicyError):
        verify_bytes(image, [key], policy=ImagePolicy(allowed_kinds=frozenset({PayloadKind.DELTA})))


def test_policy_is_checked_only_after_authentication() -> None:
    # A forged image for the wrong hardware reports the signature problem, not the policy.
    image = make_image(b"fw", [cached_key(ED, 1)], hardware_ids=["other"])
    with pytest.raises(UnknownKeyError):
        verify_bytes(image, [cached_key(ED)], policy=ImagePolicy(hardware_id="acme-ecu-v2"))


def test_delta_kind_needs_base_and_round_trips() -> None:
    key = cached_key(ED)
    base = Digest(HashAlgorithm.SHA256, bytes(range(32)))
    image = make_image(b"delta", [key], payload_kind=PayloadKind.DELTA, delta_base=base)
    result = verify_bytes(image, [key])
    assert isinstance(result, VerifiedImage)
    assert result.metadata.delta_base == base
    with pytest.raises(UsageError, match="base digest"):
        make_image(b"delta", [key], payload_kind=PayloadKind.DELTA)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1.4"),
        ("version", "01.2.3"),
        ("version", "1.2.3-" + "a" * 70),
        ("security_counter", -1),
        ("security_counter", 1 << 32),
        ("hardware_ids", []),
        ("hardware_ids", ["ok", "ok"]),
        ("hardware_ids", ["bad id"]),
        ("annotations", [("Bad", "x")]),
        ("annotations", [("k", "v" * 5000)]),
    ],
)
def test_invalid_metadata_is_a_usage_error_at_signing(field: str, value: object) -> None:
    kwargs: dict[str, object] = {field: value}
    with pytest.raises(UsageError):
        make_image(b"fw", [cached_key(ED)], **kwargs)  # type: ignore[arg-type]


def _split(image: bytes) -> tuple[bytes, bytes]:
    """(signed bytes, payload) of a well-formed image."""
    header_len = struct.unpack(">I", image[12:16])[0]
    signed = image[: PREAMBLE_SIZE + header_len]
    length = parse_protected(signed).payload_length
    return signed, image[len(signed) : len(signed) + length]


def _resign(meta: ImageMetadata, payload: bytes, key: PrivateKey, extra_tlvs: bytes = b"") -> bytes:
    signed = encode_protected(meta)
    if extra_tlvs:
        header = signed[PREAMBLE_SIZE:] + extra_tlvs
        signed = signed[:12] + struct.pack(">I", len(header)) + header
    return signed + payload + sign_protected(signed, [KeySigner(key)])


def test_unknown_critical_tlv_rejected_but_ignorable_extension_accepted() -> None:
    key = cached_key(ED)
    image = make_image(b"fw", [key])
    signed, payload = _split(image)
    meta = parse_protected(signed)
    critical = struct.pack(">HI", 0x0777, 1) + b"\x00"
    with pytest.raises(MalformedError, match="unknown critical TLV"):
        verify_bytes(_resign(meta, payload, key, critical), [key])
    ignorable = struct.pack(">HI", 0x8001, 3) + b"abc"
    result = verify_bytes(_resign(meta, payload, key, ignorable), [key])
    assert isinstance(result, VerifiedImage)
    assert result.metadata.extensions == ((0x8001, b"abc"),)


def test_out_of_order_tlvs_rejected() -> None:
    key = cached_key(ED)
    signed, payload = _split(make_image(b"fw", [key]))
    meta = parse_protected(signed)
    early = struct.pack(">HI", 0x0005, 0)  # type 5 after type 0x13: out of order
    with pytest.raises(MalformedError):
        verify_bytes(_resign(meta, payload, key, early), [key])


def test_trailing_data_after_signatures_rejected() -> None:
    key = cached_key(ED)
    image = make_image(b"fw", [key])
    with pytest.raises(MalformedError):
        verify_bytes(image + b"\x00", [key])


def test_hostile_payload_length_is_refused_without_reading() -> None:
    key = cached_key(ED)
    signed, payload = _split(make_image(b"fw", [key]))
    meta = parse_protected(signed)
    from dataclasses import replace

    huge = replace(meta, payload_length=1 << 47)
    forged = (
        encode_protected(huge) + payload + sign_protected(encode_protected(huge), [KeySigner(key)])
    )
    from otaguard.errors import TruncatedError

    with pytest.raises(TruncatedError):
        verify_bytes(forged, [key])


def test_inspect_shows_claims_without_verifying() -> None:
    image = make_image(b"fw", [cached_key(ED, 3)], version="2.0.0-rc.1")
    envelope = inspect_stream(io.BytesIO(image))
    assert envelope.metadata.version == "2.0.0-rc.1"
    assert envelope.signatures[0].key_id.hex() == key_id(cached_key(ED, 3).public_key())
