"""Request body caps, enforced before any handler reads the body (413).

A declared ``Content-Length`` over the cap is answered at once; a chunked body
is counted as it arrives and cut off when it passes the cap. Artifact uploads
have their own, larger cap (they are streamed to disk, never held in memory).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otaguard.server.config import Limits
from otaguard.server.errors import BodyTooLarge

ARTIFACT_PREFIX = "/api/v1/artifacts/"
#: A body declared over its cap but no larger than this is read (and dropped) before the 413:
#: closing a connection with unread bytes makes the kernel send a reset, which a client still
#: writing sees instead of the answer. Larger bodies are not worth reading: answer and close.
DRAIN_LIMIT = 1 << 20
DEVICE_PREFIX = "/api/v1/device/"


def cap_for(path: str, limits: Limits) -> int:
    if path.startswith(DEVICE_PREFIX):
        return limits.device_body
    if path.startswith(ARTIFACT_PREFIX):
        return limits.artifact
    return limits.operator_body


class BodyLimit:
    """ASGI middleware: at most :func:`cap_for` bytes of request body per route."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = cap_for(scope["path"], self.limits)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > cap:
                    if declared <= DRAIN_LIMIT:
                        await _drain(receive)
                    await _too_large(send, cap)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        await self.app(scope, counted, send)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _too_large(send: Send, cap: int) -> None:
    body = b'{"error":"too-large","detail":"request body over %d bytes"}' % cap
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
