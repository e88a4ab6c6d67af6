"""Fetching repository bytes over HTTP(S), with a cap on every download.

The trust engine never touches the network; a :class:`Fetcher` is all it
needs from it. :class:`HttpxFetcher` is the production one: every request has
a length cap (known from signed metadata, or a per-role ceiling), connect and
read timeouts, and an overall deadline derived from a minimum average speed,
so a hostile or broken server can neither feed endless data nor trickle
bytes forever (TUF's endless-data and slow-retrieval attacks).
"""

from __future__ import annotations

import time
from typing import Protocol

import httpx

from otaguard import __version__

#: A download must average at least this many bytes per second ...
MIN_SPEED = 2048
#: ... after this grace period (seconds) for TLS, headers and small files.
GRACE_SECONDS = 30.0
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


class FetchError(Exception):
    """A download failed: network error, HTTP error, too long, too slow."""

    def __init__(self, url: str, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.status_code = status_code


class LengthExceededError(FetchError):
    """The server sent (or announced) more bytes than the cap allows."""


class SlowRetrievalError(FetchError):
    """The server did not deliver fast enough to meet the deadline."""


class Fetcher(Protocol):
    def fetch(self, url: str, max_length: int) -> bytes:
        """Return the body at ``url``; raise :class:`FetchError` past ``max_length`` bytes."""
        ...  # pragma: no cover


class HttpxFetcher:
    """A :class:`Fetcher` on one ``httpx.Client`` (connection reuse across requests)."""

    def __init__(
        self,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        min_speed: int = MIN_SPEED,
        grace_seconds: float = GRACE_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._min_speed = min_speed
        self._grace = grace_seconds
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=True,
            max_redirects=5,
            # identity: the cap then bounds what we store, not a compressed size.
            headers={"User-Agent": f"otaguard/{__version__}", "Accept-Encoding": "identity"},
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, max_length: int) -> bytes:
        deadline = time.monotonic() + self._grace + max_length / self._min_speed
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchError(url, f"HTTP {response.status_code}", response.status_code)
                announced = response.headers.get("Content-Length")
                if announced is not None and announced.isdigit() and int(announced) > max_length:
                    raise LengthExceededError(
                        url, f"announces {announced} bytes, more than the cap {max_length}"
                    )
                chunks: list[bytes] = []
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > max_length:
                        raise LengthExceededError(url, f"more than the cap of {max_length} bytes")
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise SlowRetrievalError(url, "too slow: download deadline passed")
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise FetchError(url, f"{type(exc).__name__}: {exc}") from exc
