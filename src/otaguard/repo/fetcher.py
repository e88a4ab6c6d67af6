"""Fetching repository bytes over HTTP(S): every exchange capped in bytes and in time.

The trust engine never touches the network; a :class:`Fetcher` is all it
needs from it. :class:`HttpxFetcher` is the production one, used by
``otaguard tuf-client`` and the device agent for every network fetch. Its caps
live in one :class:`FetcherConfig`:

* **Length**: every request has a cap (from signed metadata, or a per-role
  ceiling). A ``Content-Length`` above it is refused before the body is read;
  the body is read as *raw* bytes (``iter_raw``) and cut off as soon as it
  passes the cap (endless data). Nothing is ever decoded: only the identity
  encoding is accepted, any other ``Content-Encoding`` is refused before the
  body is read, so a few kilobytes of ``gzip, gzip`` cannot expand to
  gigabytes in memory (decompression bomb). Memory is bounded by the cap plus
  one network read (64 KiB).
* **Time**: one deadline per exchange, ``grace_seconds + max_length /
  min_speed``, covers all of it: connecting, the TLS handshake, sending the
  request, every byte of status line and headers, every redirect and the
  body. It is enforced below httpx, on the socket (:class:`_DeadlineBackend`):
  each socket operation may wait at most the time left, so a server trickling
  one header byte every few seconds is cut off at the deadline (slow
  retrieval), not hours later. ``connect_timeout`` and ``read_timeout`` bound
  single operations within it. Name resolution is left to the system
  resolver's own timeouts.
* Proxy environment variables are ignored; at most ``max_redirects`` redirects
  (the content is verified either way).

Errors: :class:`FetchError` is a :class:`~otaguard.errors.TransportError`
(exit 2: the network failed, nothing was decided about the content;
``status_code`` for an HTTP error). A server caught by a cap is refused:
:class:`LengthExceededError`, :class:`SlowRetrievalError` and
:class:`EncodingRefusedError` are also :class:`~otaguard.errors.TransferRefusedError`
(exit 1).

For later (Range requests, downloads streamed to a file): :meth:`HttpxFetcher.stream`
yields the body as raw chunks under the same caps, and takes extra request headers.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx

from otaguard import __version__
from otaguard.errors import TransferRefusedError, TransportError


@dataclass(frozen=True)
class FetcherConfig:
    """Every cap of :class:`HttpxFetcher` (like python-tuf's ``UpdaterConfig``)."""

    #: The longest one connection attempt (or TLS handshake) may take.
    connect_timeout: float = 10.0
    #: The longest wait for the next bytes (headers or body) from the server.
    read_timeout: float = 30.0
    #: A whole exchange must average at least this many bytes per second ...
    min_speed: int = 2048
    #: ... after this grace period (seconds) for connecting, TLS and headers.
    grace_seconds: float = 30.0
    max_redirects: int = 5
    #: Size of the pieces the body is handed over in.
    chunk_size: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "min_speed", "grace_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FetcherConfig.{name} must be positive")
        if self.max_redirects < 0 or self.chunk_size < 1:
            raise ValueError("FetcherConfig: max_redirects >= 0 and chunk_size >= 1")

    def time_allowed(self, max_length: int) -> float:
        """Seconds one exchange of at most ``max_length`` bytes may take, start to end."""
        return self.grace_seconds + max_length / self.min_speed


class FetchError(TransportError):
    """A download failed: network error, HTTP error status, broken response (or a cap)."""

    def __init__(self, url: str, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.status_code = status_code


class LengthExceededError(FetchError, TransferRefusedError):
    """The server sent (or announced) more bytes than the cap allows (endless data)."""

    check = "endless-data"


class SlowRetrievalError(FetchError, TransferRefusedError):
    """The exchange did not finish before its deadline (slow retrieval)."""

    check = "slow-retrieval"


class EncodingRefusedError(FetchError, TransferRefusedError):
    """The server applied a content encoding (gzip, ...) although we asked for identity."""

    check = "content-encoding"


class Fetcher(Protocol):
    def fetch(self, url: str, max_length: int) -> bytes:
        """Return the body at ``url``; raise :class:`FetchError` past ``max_length`` bytes."""
        ...  # pragma: no cover


# -- the deadline, enforced on the socket ---------------------------------------------------

#: The monotonic time by which the current exchange of this thread must be over.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "otaguard_fetch_deadline", default=None
)


def _time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of the exchange's deadline; raise if none is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the exchange's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation waits at most until the exchange's deadline.

    Python's socket and SSL timeouts are totals per call (the TLS handshake is one
    call), and each call here gets only the time left: the sum cannot pass the deadline.
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, with every stream bounded by the deadline."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        limit = _time_left(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, limit, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        limit = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


#: httpx's own defaults for its pool.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool that uses :class:`_DeadlineBackend`.

    httpx 0.28 takes no network backend, so the pool it builds is replaced by the same
    pool on ours (``_pool`` is httpx's private attribute: ``tests/repo/test_private_apis.py``
    fails loudly if a new httpx moves it).
    """

    def __init__(self) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=_LIMITS.max_connections,
            max_keepalive_connections=_LIMITS.max_keepalive_connections,
            keepalive_expiry=_LIMITS.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


# -- the fetcher ----------------------------------------------------------------------------


def _encodings(response: httpx.Response) -> list[str]:
    """The content codings applied to the body, identity left out."""
    value = response.headers.get("Content-Encoding", "")
    codings = (token.strip().lower() for token in value.split(","))
    return [c for c in codings if c and c != "identity"]


class HttpxFetcher:
    """A :class:`Fetcher` on one ``httpx.Client`` (connection reuse across requests)."""

    def __init__(
        self,
        config: FetcherConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config or FetcherConfig()
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout),
            follow_redirects=True,
            max_redirects=self.config.max_redirects,
            # identity: the cap then bounds what we receive, and nothing is ever decoded.
            headers={"User-Agent": f"otaguard/{__version__}", "Accept-Encoding": "identity"},
            transport=transport or _DeadlineTransport(),
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, max_length: int) -> bytes:
        with self.stream(url, max_length) as chunks:
            return b"".join(chunks)

    @contextlib.contextmanager
    def stream(
        self, url: str, max_length: int, *, headers: Mapping[str, str] | None = None
    ) -> Iterator[Iterator[bytes]]:
        """The body at ``url`` as raw chunks, within ``max_length`` bytes and the deadline."""
        deadline = time.monotonic() + self.config.time_allowed(max_length)
        token = _DEADLINE.set(deadline)
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self._check_head(url, response, max_length)
                yield self._body(url, response, max_length, deadline)
        except httpx.TimeoutException as exc:
            if time.monotonic() >= deadline:
                raise SlowRetrievalError(
                    url, f"too slow: not done within {self.config.time_allowed(max_length):.0f} s"
                ) from exc
            raise FetchError(url, f"{type(exc).__name__}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(url, f"{type(exc).__name__}: {exc}") from exc
        finally:
            _DEADLINE.reset(token)

    @staticmethod
    def _check_head(url: str, response: httpx.Response, max_length: int) -> None:
        if response.status_code != 200:
            raise FetchError(url, f"HTTP {response.status_code}", response.status_code)
        codings = _encodings(response)
        if codings:
            raise EncodingRefusedError(
                url, f"content encoding {', '.join(codings)[:80]!r} refused (identity only)"
            )
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > max_length:
            raise LengthExceededError(
                url, f"announces {announced[:40]} bytes, more than the cap {max_length}"
            )

    def _body(
        self, url: str, response: httpx.Response, max_length: int, deadline: float
    ) -> Iterator[bytes]:
        received = 0
        for chunk in response.iter_raw(self.config.chunk_size):
            received += len(chunk)
            if received > max_length:
                raise LengthExceededError(url, f"more than the cap of {max_length} bytes")
            if time.monotonic() > deadline:
                raise SlowRetrievalError(url, "too slow: download deadline passed")
            yield chunk
