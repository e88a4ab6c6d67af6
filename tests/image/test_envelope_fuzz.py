"""Property tests: the envelope parser and verifier only ever raise otaguard's errors."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import cached_key, make_image
from otaguard.crypto.keys import KeyType
from otaguard.errors import OtaguardError, RejectedError
from otaguard.image import ImagePolicy, TrustedKeys, inspect_stream, verify_stream
from otaguard.image.envelope_format import (
    Digest,
    HashAlgorithm,
    ImageMetadata,
    encode_protected,
    parse_protected,
    parse_signature_block,
)
from otaguard.image.kinds import PayloadKind

KEY = cached_key(KeyType.ED25519)
TRUSTED = TrustedKeys.of([KEY.public_key()])
VALID = make_image(b"payload " * 20, [KEY], annotations=[("a", "b")])
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _verify(data: bytes) -> None:
    verify_stream(io.BytesIO(data), TRUSTED, threshold=1, policy=ImagePolicy())


@SETTINGS
@given(st.binary(max_size=512))
@example(b"OTAGUARD\x00\x01\x00\x00\x00\x00\x00\x06\x00\x01\xff\xff\xff\xff")
def test_parsers_raise_only_otaguard_errors_on_garbage(data: bytes) -> None:
    for parse in (parse_protected, parse_signature_block):
        try:
            parse(data)
        except OtaguardError:
            pass
    try:
        _verify(data)
    except RejectedError:
        pass
    try:
        inspect_stream(io.BytesIO(data))
    except OtaguardError:
        pass


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    st.integers(0, 3),
    st.binary(max_size=8),
)
def test_mutated_valid_images_are_rejected(
    edits: list[tuple[int, int]], mode: int, insert: bytes
) -> None:
    data = bytearray(VALID)
    for pos, value in edits:
        if mode == 0:
            data[pos] = value
        elif mode == 1:
            data[pos:pos] = insert
        elif mode == 2:
            del data[pos : pos + 1 + value % 8]
        else:
            data[pos] ^= 1 << (value % 8)
    mutated = bytes(data)
    if mutated == VALID:
        _verify(mutated)
        return
    try:
        _verify(mutated)
    except RejectedError:
        return
    raise AssertionError("a modified image verified")


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 999),
    st.integers(0, 999),
    st.integers(0, 999),
    st.from_regex(r"(rc\.[1-9][0-9]?|beta)?", fullmatch=True),
)


@SETTINGS
@given(
    version=versions,
    counter=st.integers(0, 2**32 - 1),
    hw=st.lists(ids, min_size=1, max_size=5, unique=True),
    length=st.integers(0, 2**48),
    digest=st.binary(min_size=64, max_size=64),
    sha512=st.booleans(),
    created=st.integers(0, 2**63 - 1),
    annotations=st.dictionaries(
        st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True),
        st.text(max_size=30),
        max_size=5,
    ),
    certs=st.lists(st.binary(min_size=1, max_size=50), max_size=3),
    delta=st.booleans(),
)
def test_encode_parse_round_trip(
    version: str,
    counter: int,
    hw: list[str],
    length: int,
    digest: bytes,
    sha512: bool,
    created: int,
    annotations: dict[str, str],
    certs: list[bytes],
    delta: bool,
) -> None:
    algorithm = HashAlgorithm.SHA512 if sha512 else HashAlgorithm.SHA256
    meta = ImageMetadata(
        version=version,
        security_counter=counter,
        hardware_ids=tuple(hw),
        payload_length=length,
        payload_digest=Digest(algorithm, digest[: algorithm.size]),
        created=created,
        payload_kind=PayloadKind.DELTA if delta else PayloadKind.FULL,
        delta_base=Digest(HashAlgorithm.SHA256, digest[:32]) if delta else None,
        annotations=tuple(sorted(annotations.items())),
        cert_chain=tuple(certs),
    )
    assert parse_protected(encode_protected(meta)) == meta
