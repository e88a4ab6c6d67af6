"""Device request signatures: how a device proves who sends a request to the fleet server.

Every device request carries four headers (:data:`HEADERS`): the device id, the
time of signing (Unix seconds), a fresh random nonce and a signature by the
device's identity key (the key certified by ``otaguard pki issue-device``) over
the canonical string of :func:`canonical_request`, which binds

* a domain tag (``otaguard-request-v1``): the signature cannot be reused for
  another protocol or a later version of this one;
* the method, the raw path and the raw query string: a signed ``GET`` of one
  resource is not a signed ``POST`` of another;
* the device id: a request signed by device A names device A, so a server that
  looks the key up by that id refuses it for device B (403/404);
* the time and the nonce: a request outside the accepted clock skew is stale,
  and a nonce already seen within the window is a replay;
* the SHA-256 of the body: the body cannot be swapped under the signature.

Why signatures and not mutual TLS: TLS is usually terminated by a load balancer
or a CDN in front of stateless server processes, where the client certificate
is lost; a signature travels with the request through any of them and is
checked by the process that acts on it. docs/server.md lists the threats.

The nonce doubles as the Uptane check-in nonce: the director's metadata of a
check-in echoes it, so the device can tell a fresh answer from a replayed one.

This module is pure: keys, bytes and time in, headers or a verdict out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from otaguard.crypto.keys import PublicKey
from otaguard.crypto.schemes import scheme_for_key, verify_signature
from otaguard.crypto.signer import Signer
from otaguard.errors import (
    MalformedError,
    RequestSignatureError,
    SignatureError,
    StaleRequestError,
)

DOMAIN = b"otaguard-request-v1"
HEADER_DEVICE = "X-Otaguard-Device"
HEADER_TIME = "X-Otaguard-Time"
HEADER_NONCE = "X-Otaguard-Nonce"
HEADER_SIGNATURE = "X-Otaguard-Signature"
HEADERS = (HEADER_DEVICE, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)

#: How far a request's signing time may be from the server's clock, either way.
#: It bounds how long a server must remember nonces to refuse replays.
MAX_SKEW_SECONDS = 300
#: Device ids are the certificate's device id (a VIN, a serial number).
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
#: 16 random bytes, lowercase hex.
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_SIGNATURE_BYTES = 1024
MAX_TARGET_LENGTH = 4096


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request says about itself (the caller then checks the nonce is new)."""

    device_id: str
    time: int
    nonce: str


def canonical_request(
    *, method: str, path: str, query: str, device_id: str, time: int, nonce: str, body: bytes
) -> bytes:
    """The exact bytes a device signs (one field per line, the body as its SHA-256)."""
    if len(path) + len(query) > MAX_TARGET_LENGTH:
        raise MalformedError("request target too long to sign")
    if "\n" in method or "\n" in path or "\n" in query:
        raise MalformedError("request line fields must not contain a newline")
    lines = [
        DOMAIN,
        method.upper().encode("ascii"),
        path.encode("utf-8"),
        query.encode("utf-8"),
        device_id.encode("ascii"),
        str(time).encode("ascii"),
        nonce.encode("ascii"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    ]
    return b"\n".join(lines)


def sign_request(
    signer: Signer,
    *,
    device_id: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    time: int,
    nonce: str,
) -> dict[str, str]:
    """The four headers of a request, signed by the device's identity key."""
    _check_fields(device_id, nonce)
    message = canonical_request(
        method=method,
        path=path,
        query=query,
        device_id=device_id,
        time=time,
        nonce=nonce,
        body=body,
    )
    signature = signer.sign(message)
    return {
        HEADER_DEVICE: device_id,
        HEADER_TIME: str(time),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
    }


def read_request_headers(headers: Mapping[str, str]) -> tuple[str, int, str, bytes]:
    """The device id, time, nonce and signature of a request, syntax checked only.

    ``headers`` must look names up case-insensitively (as Starlette's and httpx's
    header objects do). Raises :class:`MalformedError` when a header is missing
    or malformed: the caller answers 401 without looking anything up.
    """
    missing = [name for name in HEADERS if not headers.get(name)]
    if missing:
        raise MalformedError(f"unsigned request: missing {', '.join(missing)}")
    device_id = headers[HEADER_DEVICE]
    nonce = headers[HEADER_NONCE]
    _check_fields(device_id, nonce)
    raw_time = headers[HEADER_TIME]
    if not raw_time.isdigit() or len(raw_time) > 12:
        raise MalformedError(f"{HEADER_TIME} is not a Unix time in seconds")
    raw_signature = headers[HEADER_SIGNATURE]
    if len(raw_signature) > MAX_SIGNATURE_BYTES * 2:
        raise MalformedError(f"{HEADER_SIGNATURE} is too long")
    try:
        signature = base64.b64decode(raw_signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedError(f"{HEADER_SIGNATURE} is not base64") from exc
    return device_id, int(raw_time), nonce, signature


def verify_request(
    key: PublicKey,
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now: int,
    max_skew: int = MAX_SKEW_SECONDS,
) -> SignedRequest:
    """Check a device request's signature and freshness; return what it claims.

    Order: syntax (:class:`MalformedError`), time within ``max_skew`` of ``now``
    (:class:`StaleRequestError`), then the signature by ``key`` over the canonical
    string (:class:`RequestSignatureError`). The nonce's novelty is the caller's
    check (it needs storage): see :class:`SignedRequest`.
    """
    device_id, time, nonce, signature = read_request_headers(headers)
    if abs(now - time) > max_skew:
        raise StaleRequestError(
            f"request signed at {time}, {abs(now - time)} s from the server's clock "
            f"(at most {max_skew} s)"
        )
    message = canonical_request(
        method=method,
        path=path,
        query=query,
        device_id=device_id,
        time=time,
        nonce=nonce,
        body=body,
    )
    try:
        verify_signature(key, scheme_for_key(key), message, signature)
    except SignatureError as exc:
        raise RequestSignatureError(f"request signature does not verify: {exc}") from exc
    return SignedRequest(device_id, time, nonce)


def _check_fields(device_id: str, nonce: str) -> None:
    if not DEVICE_ID_RE.match(device_id):
        raise MalformedError("device id must be 1-64 characters of [A-Za-z0-9._:-]")
    if not NONCE_RE.match(nonce):
        raise MalformedError("nonce must be 32 lowercase hex characters")
