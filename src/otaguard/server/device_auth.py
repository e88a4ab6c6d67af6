"""The signed-request dependency: every device request is authenticated here, nowhere else.

Steps (docs/server.md, "Device authentication"), each answered before the next:

1. the four headers parse (``otaguard.protocol.signing.read_request_headers``) -- 401;
2. the device named by ``X-Otaguard-Device`` is enrolled -- 401; not revoked -- 403;
3. the signing time is within the window of the server's clock -- 401 ``request-time``;
4. the signature over the method, raw path, raw query, device id, time, nonce and
   body hash verifies with the device's enrolled key -- 401 ``request-signature``;
5. the nonce is new: read-only requests here, in this process's cache; state-changing
   ones in the database, in the transaction of their change (the handler passes
   :attr:`DeviceCaller.nonce` to the service, which records it) -- 401 ``request-replay``;
6. a path naming a device (``{device_id}``) names this one -- 403.

First contact (enrolment) has no enrolled key yet: :func:`enrolment_request`
checks the headers and hands the handler what it needs to verify the signature
with the key of the certificate the body carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from otaguard.crypto.keys import PublicKey
from otaguard.errors import MalformedError, RejectedError
from otaguard.protocol import signing
from otaguard.server.context import ServerContext
from otaguard.server.errors import ApiError
from otaguard.server.services.devices import DeviceRecord

READ_ONLY = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class DeviceCaller:
    """A device whose request verified (steps 1-6)."""

    device: DeviceRecord
    time: int
    nonce: str

    @property
    def id(self) -> str:
        return self.device.id


def _unauthenticated(check: str, detail: str) -> ApiError:
    return ApiError(401, check, detail, {"WWW-Authenticate": "Otaguard-Signature"})


def _target(request: Request) -> tuple[str, str]:
    """The raw path and raw query, exactly as the device sent (and signed) them."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    try:
        path = raw.decode("ascii")
        query = request.scope.get("query_string", b"").decode("ascii")
    except UnicodeDecodeError:
        raise _unauthenticated("malformed", "request target is not ASCII") from None
    return path.split("?", 1)[0], query


async def _verify(request: Request, key: PublicKey, now: int) -> signing.SignedRequest:
    """Steps 3 and 4."""
    body = await request.body()
    path, query = _target(request)
    try:
        return signing.verify_request(
            key, request.headers, method=request.method, path=path, query=query, body=body, now=now
        )
    except RejectedError as exc:
        raise _unauthenticated(exc.check, str(exc)) from None


def _headers(request: Request) -> tuple[str, int, str]:
    """Step 1."""
    try:
        device_id, time, nonce, _ = signing.read_request_headers(request.headers)
    except MalformedError as exc:
        raise _unauthenticated("unsigned", str(exc)) from None
    return device_id, time, nonce


async def signed_device(request: Request) -> DeviceCaller:
    ctx: ServerContext = request.app.state.server
    device_id, _, _ = _headers(request)
    device = await run_in_threadpool(ctx.device_record, device_id)
    if device is None:
        raise _unauthenticated("unknown-device", f"no device {device_id!r} is enrolled")
    if device.revoked:
        raise ApiError(403, "revoked", f"device {device_id} is revoked")
    now = ctx.now()
    signed = await _verify(request, device.public_key, now)
    if request.method in READ_ONLY and not ctx.nonces.first_use(device.id, signed.nonce, now):
        raise _unauthenticated("request-replay", "this request's nonce was already used")
    named = request.path_params.get("device_id")
    if named is not None and named != device.id:
        raise ApiError(403, "forbidden", "a device may only act on itself")
    return DeviceCaller(device, signed.time, signed.nonce)


@dataclass(frozen=True)
class EnrolmentHeaders:
    device_id: str
    time: int
    nonce: str


async def enrolment_request(request: Request) -> EnrolmentHeaders:
    """Step 1 of first contact; the handler verifies the signature with the leaf's key."""
    device_id, time, nonce = _headers(request)
    return EnrolmentHeaders(device_id, time, nonce)


async def verify_with(request: Request, key: PublicKey, now: int) -> signing.SignedRequest:
    """Steps 3-4 with a key the request itself brings (first contact)."""
    return await _verify(request, key, now)


SignedDevice = Annotated[DeviceCaller, Depends(signed_device)]
