"""Downloading a TUF target so that it survives the field: HTTP Range, resume, caps, verify.

:func:`fetch_target` fills the missing chunks of the target's
:class:`~otaguard.agent.chunks.ChunkStore` and then verifies the whole file
against the *signed* length and hashes (``TargetFile.verify_length_and_hashes``,
python-tuf's own check, as the TUF client does it). What it defends against:

* **dropped connections, killed agents, power cuts**: each run asks only for
  the missing chunks, ``Range: bytes=<first missing>-<end of the run>``;
  completed chunks are never fetched or written again;
* **servers that ignore Range** (``200`` instead of ``206``): the body is read
  from its start, the bytes of completed chunks are skipped (not written);
* **a wrong ``Content-Range``** (another start, another total, past what was
  asked, several ranges) or a ``Content-Length`` that does not match: the
  response is refused before a byte of it is stored (``bad-response``);
* **endless data**: nothing past the signed length is ever read into a chunk
  or written; a body longer than announced is cut off;
* **slow retrieval**: a source averaging less than ``min_rate`` over
  ``rate_window`` seconds (after ``rate_grace``) is abandoned (``slow``), a
  stalled one by the read timeout; the chunks it completed are kept;
* **other bytes** (a hostile mirror, bits flipped in transit): the whole-file
  check refuses them; the download is discarded, never installed, and the
  refusal is final for this offer.

Only the identity encoding is accepted (nothing is decompressed).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile

from otaguard import __version__
from otaguard.agent.chunks import ChunkStore
from otaguard.agent.config import AgentConfig, Failure
from otaguard.agent.failures import TransientError, classify, describe
from otaguard.errors import RepositoryRejectedError, UsageError

_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")

#: Called with (bytes of the target held verified so far, its length).
Progress = Callable[[int, int], None]


def http_client(config: AgentConfig, **kwargs: object) -> httpx.Client:
    """The agent's HTTP client: its timeouts, no proxies from the environment, no decoding."""
    timeout = httpx.Timeout(
        config.read_timeout,
        connect=config.connect_timeout,
        write=config.read_timeout,
        pool=config.connect_timeout,
    )
    return httpx.Client(
        timeout=timeout,
        follow_redirects=True,
        max_redirects=config.max_redirects,
        headers={"User-Agent": f"otaguard-agent/{__version__}", "Accept-Encoding": "identity"},
        trust_env=False,
        **kwargs,  # type: ignore[arg-type]
    )


def target_key(info: TargetFile) -> bytes:
    """The download's identity: path, length and hashes (other content, other download)."""
    description = json.dumps([info.path, info.length, info.hashes], sort_keys=True)
    return hashlib.sha256(description.encode()).digest()


def download_name(info: TargetFile) -> str:
    """The directory under ``downloads/`` that holds ``info``'s download."""
    return target_key(info).hex()[:32]


def target_url(base: str, info: TargetFile, consistent_snapshot: bool) -> str:
    """Where the repository serves ``info`` (hash-prefixed names with consistent snapshots)."""
    remote = info.path
    if consistent_snapshot and info.hashes:
        directory, sep, name = remote.rpartition("/")
        remote = f"{directory}{sep}{next(iter(info.hashes.values()))}.{name}"
    return (base if base.endswith("/") else base + "/") + remote


class RateGuard:
    """Slow retrieval: at least ``min_rate`` bytes/s over any ``window`` after ``grace``."""

    def __init__(self, config: AgentConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._min = config.min_rate
        self._window = config.rate_window
        self._clock = clock
        self._start = clock()
        self._check_from = self._start + config.rate_grace + config.rate_window
        self._total = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(self._start, 0)])

    def received(self, n: int) -> None:
        now = self._clock()
        self._total += n
        self._samples.append((now, self._total))
        # keep one sample at or before the window's start
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        if now < self._check_from:
            return
        then, total_then = self._samples[0]
        span = max(now - then, self._window)
        rate = (self._total - total_then) / span
        if rate < self._min:
            raise TransientError(
                Failure.SLOW,
                f"source too slow: {rate:.0f} B/s over the last {span:.1f} s "
                f"(at least {self._min} B/s required)",
            )


def _parse_content_range(value: str | None) -> tuple[int, int, int]:
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        raise TransientError(
            Failure.BAD_RESPONSE, f"206 with an unusable Content-Range {str(value)[:60]!r}"
        )
    first, last, total = (int(g) for g in match.groups())
    return first, last, total


def _status_failure(status: int) -> TransientError:
    if status == 416:
        return TransientError(Failure.BAD_RESPONSE, "416: the server refuses the range")
    if status >= 500 or status in (403, 404, 408, 429):
        return TransientError(Failure.SERVER, f"HTTP {status}")
    return TransientError(Failure.BAD_RESPONSE, f"unexpected HTTP {status}")


def _expected_body(
    store: ChunkStore, response: httpx.Response, start: int, end: int
) -> tuple[int, int]:
    """Check the response head; return the target range ``[start, end)`` its body holds."""
    status = response.status_code
    if status == 206:
        first, last, total = _parse_content_range(response.headers.get("Content-Range"))
        if total != store.length or first != start or not first <= last < end:
            raise TransientError(
                Failure.BAD_RESPONSE,
                f"Content-Range {first}-{last}/{total} does not answer bytes={start}-{end - 1} "
                f"of a {store.length}-byte target",
            )
        body_start, body_end = first, last + 1
    elif status == 200:  # Range ignored: the whole representation
        body_start, body_end = 0, store.length
    else:
        raise _status_failure(status)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise TransientError(Failure.BAD_RESPONSE, f"content encoding {encoding[:40]!r} refused")
    announced = response.headers.get("Content-Length")
    if announced is not None and announced != str(body_end - body_start):
        raise TransientError(
            Failure.BAD_RESPONSE,
            f"Content-Length {announced[:20]} where {body_end - body_start} bytes were due",
        )
    return body_start, body_end


def _receive(
    store: ChunkStore,
    response: httpx.Response,
    body_start: int,
    end: int,
    guard: RateGuard,
    progress: Progress | None,
) -> None:
    """Write the body's complete, missing chunks; stop at ``end`` (never read past it)."""
    pos = body_start
    buffer = bytearray()
    wanted = set(range(store.count)) - store.verified
    for piece in response.iter_raw():  # as received: a cut loses no complete chunk
        guard.received(len(piece))
        view = memoryview(piece)
        while view and pos < end:
            index = pos // store.chunk_size
            chunk_end = store.bounds(index)[1]
            take = min(len(view), chunk_end - pos)
            if index in wanted:
                buffer += view[:take]
            pos += take
            view = view[take:]
            if pos == chunk_end:
                if index in wanted:
                    store.put(index, bytes(buffer))
                    wanted.discard(index)
                    if progress is not None:
                        progress(store.verified_bytes, store.length)
                buffer.clear()
        if pos >= end:
            return  # anything after this is never read
    if pos < end:
        raise TransientError(Failure.NETWORK, f"connection closed at byte {pos} of {end}")


def fill(
    client: httpx.Client,
    url: str,
    store: ChunkStore,
    config: AgentConfig,
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Fetch every missing chunk of ``store`` from ``url`` (raises :class:`TransientError`).

    One request per run of missing chunks; a server may answer a shorter range
    than asked (the rest is asked for next), but every answer must complete at
    least one chunk.
    """
    while not store.done():
        first, last = store.missing_runs()[0]
        start, end = store.bounds(first)[0], store.bounds(last)[1]
        before = len(store.verified)
        guard = RateGuard(config, clock)
        try:
            with client.stream("GET", url, headers={"Range": f"bytes={start}-{end - 1}"}) as resp:
                body_start, body_end = _expected_body(store, resp, start, end)
                _receive(store, resp, body_start, body_end, guard, progress)
        except httpx.HTTPError as exc:
            failure = classify(exc) or Failure.NETWORK
            if isinstance(exc, httpx.ReadTimeout):
                failure = Failure.SLOW  # a stalled source
            raise TransientError(failure, f"{url}: {describe(exc)}") from exc
        if len(store.verified) == before:
            raise TransientError(Failure.BAD_RESPONSE, f"{url}: the response completed no chunk")


def fetch_target(
    client: httpx.Client,
    base_url: str,
    info: TargetFile,
    downloads: Path,
    config: AgentConfig,
    *,
    consistent_snapshot: bool,
    progress: Progress | None = None,
) -> Path:
    """The target's bytes on storage, verified whole against ``info`` (the signed metadata).

    Raises :class:`TransientError` when the download must be retried later (the
    chunks so far are kept) and :class:`~otaguard.errors.RepositoryRejectedError`
    when the bytes are not the signed ones (the download is discarded).
    """
    if info.length > config.max_target_length:
        raise UsageError(
            f"{info.path}: {info.length} bytes, more than this device accepts "
            f"({config.max_target_length})"
        )
    key = target_key(info)
    store = ChunkStore(
        downloads / download_name(info), key=key, length=info.length, chunk_size=config.chunk_size
    )
    try:
        if progress is not None:
            progress(store.verified_bytes, store.length)
        if not store.done():
            url = target_url(base_url, info, consistent_snapshot)
            fill(client, url, store, config, progress=progress)
        try:
            with open(store.data_path, "rb") as handle:
                info.verify_length_and_hashes(handle)
        except tuf_exceptions.LengthOrHashMismatchError as exc:
            store.discard()
            raise RepositoryRejectedError(
                f"image repository download: {info.path}: {describe(exc)}"
            ) from exc
        return store.data_path
    finally:
        store.close()
