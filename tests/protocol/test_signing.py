"""Device request signatures: every field is bound, every refusal has its check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import cached_key
from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import KeySigner
from otaguard.errors import MalformedError, RequestSignatureError, StaleRequestError
from otaguard.protocol.signing import (
    HEADER_DEVICE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIME,
    HEADERS,
    canonical_request,
    sign_request,
    verify_request,
)

NOW = 1_800_000_000
NONCE = "0123456789abcdef0123456789abcdef"
DEVICE = cached_key(KeyType.ECDSA_P256, 60)
OTHER = cached_key(KeyType.ECDSA_P256, 61)


def _signed(signer: KeySigner | None = None, **over: object) -> dict[str, str]:
    fields: dict[str, object] = {
        "device_id": "VIN-1",
        "method": "POST",
        "path": "/api/v1/device/state",
        "query": "a=1",
        "body": b'{"x":1}',
        "time": NOW,
        "nonce": NONCE,
    }
    fields.update(over)
    return sign_request(signer or KeySigner(DEVICE), **fields)  # type: ignore[arg-type]


def _verify(headers: dict[str, str], **over: object) -> object:
    fields: dict[str, object] = {
        "method": "POST",
        "path": "/api/v1/device/state",
        "query": "a=1",
        "body": b'{"x":1}',
        "now": NOW,
    }
    fields.update(over)
    return verify_request(DEVICE.public_key(), headers, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [KeyType.ED25519, KeyType.ECDSA_P256, KeyType.RSA_3072])
def test_a_signed_request_verifies_with_every_key_type(kind: KeyType) -> None:
    key = cached_key(kind, 62)
    headers = _signed(KeySigner(key))
    got = verify_request(
        key.public_key(),
        headers,
        method="POST",
        path="/api/v1/device/state",
        query="a=1",
        body=b'{"x":1}',
        now=NOW,
    )
    assert (got.device_id, got.time, got.nonce) == ("VIN-1", NOW, NONCE)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/api/v1/device/events"),
        ("query", "a=2"),
        ("body", b'{"x":2}'),
    ],
)
def test_every_request_field_is_bound(field: str, value: object) -> None:
    with pytest.raises(RequestSignatureError):
        _verify(_signed(), **{field: value})


@pytest.mark.parametrize(
    ("header", "value"),
    [(HEADER_DEVICE, "VIN-2"), (HEADER_NONCE, "f" * 32), (HEADER_TIME, str(NOW + 1))],
)
def test_every_signed_header_is_bound(header: str, value: str) -> None:
    headers = _signed()
    headers[header] = value
    with pytest.raises(RequestSignatureError):
        _verify(headers)


def test_another_devices_key_is_refused() -> None:
    with pytest.raises(RequestSignatureError):
        _verify(_signed(KeySigner(OTHER)))


@pytest.mark.parametrize("offset", [-301, 301, 10**6])
def test_a_request_outside_the_skew_is_stale(offset: int) -> None:
    with pytest.raises(StaleRequestError):
        _verify(_signed(time=NOW + offset))


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_request_inside_the_skew_is_accepted(offset: int) -> None:
    _verify(_signed(time=NOW + offset))


@pytest.mark.parametrize("missing", HEADERS)
def test_a_missing_header_is_malformed(missing: str) -> None:
    headers = _signed()
    del headers[missing]
    with pytest.raises(MalformedError):
        _verify(headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_DEVICE, "../etc"),
        (HEADER_DEVICE, "x" * 65),
        (HEADER_NONCE, "ABC"),
        (HEADER_NONCE, "g" * 32),
        (HEADER_TIME, "-5"),
        (HEADER_TIME, "1e9"),
        (HEADER_TIME, "9" * 13),
        (HEADER_SIGNATURE, "not base64!"),
        (HEADER_SIGNATURE, "A" * 4096),
    ],
)
def test_malformed_headers_are_refused_before_any_crypto(header: str, value: str) -> None:
    headers = _signed()
    headers[header] = value
    with pytest.raises(MalformedError):
        _verify(headers)


def test_newlines_cannot_shift_fields() -> None:
    with pytest.raises(MalformedError):
        canonical_request(
            method="GET", path="/a\n", query="", device_id="d", time=1, nonce=NONCE, body=b""
        )


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*HEADERS, "Other"]), st.text(max_size=80)))
def test_arbitrary_headers_raise_only_our_errors(headers: dict[str, str]) -> None:
    try:
        _verify(headers)
    except (MalformedError, RequestSignatureError, StaleRequestError):
        pass
