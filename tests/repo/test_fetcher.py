"""The fetcher against hostile servers on loopback: every exchange is capped in bytes and in time.

Real sockets throughout: ``repo`` is an ``http.server`` whose handlers misbehave, and
:class:`RawServer` speaks raw TCP for what ``http.server`` cannot do (trickling the
status line). No timed assertions: a slow server is shown to be cut off by the
refusal raised and by the server seeing the client hang up before it was done.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import httpx
import pytest

from otaguard.errors import OtaguardError, RejectedError, TransferRefusedError, TransportError
from otaguard.repo.fetcher import (
    EncodingRefusedError,
    FetcherConfig,
    FetchError,
    HttpxFetcher,
    LengthExceededError,
    SlowRetrievalError,
)

#: A deadline of about half a second for small files (grace 0.5 s, 1 MB/s).
QUICK = FetcherConfig(grace_seconds=0.5, min_speed=1_000_000)


class RawServer:
    """Answers each TCP connection on 127.0.0.1 with ``script``; notes when the client hangs up."""

    def __init__(self, script: Callable[[socket.socket, RawServer], None]) -> None:
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.sent = 0
        self.hung_up = False
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                piece = conn.recv(4096)
                if not piece:
                    break
                request += piece
            try:
                self._script(conn, self)
            except OSError:
                self.hung_up = True
        self.done.set()

    def close(self) -> None:
        self._listener.close()


def trickle(data: bytes, pause: float) -> Callable[[socket.socket, RawServer], None]:
    """Send ``data`` one byte at a time, ``pause`` seconds apart."""

    def script(conn: socket.socket, server: RawServer) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            server.sent += 1
            time.sleep(pause)
        conn.recv(1)  # until the client closes

    return script


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Callable[[socket.socket, RawServer], None]) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def respond(
    body: bytes, headers: dict[str, str] | None = None
) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def handler(request: http.server.BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    return handler


# -- the error classes ------------------------------------------------------------------------


def test_transport_failures_and_refusals_are_told_apart() -> None:
    assert issubclass(FetchError, TransportError) and not issubclass(FetchError, RejectedError)
    assert FetchError("u", "x").exit_code == 2
    for refusal in (LengthExceededError, SlowRetrievalError, EncodingRefusedError):
        assert issubclass(refusal, FetchError) and issubclass(refusal, TransferRefusedError)
        assert refusal("u", "x").exit_code == 1
    checks = {c.check for c in (LengthExceededError, SlowRetrievalError, EncodingRefusedError)}
    assert checks == {"endless-data", "slow-retrieval", "content-encoding"}


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="min_speed"):
        FetcherConfig(min_speed=0)
    with pytest.raises(ValueError, match="grace"):
        FetcherConfig(grace_seconds=-1)
    assert FetcherConfig().time_allowed(2048) == 31.0


# -- endless data, slow bodies, HTTP errors ----------------------------------------------------


def test_fetcher_length_cap(repo, hostile) -> None:
    repo.overrides["/endless"] = hostile["endless"]
    with HttpxFetcher() as fetcher:
        with pytest.raises(LengthExceededError):
            fetcher.fetch(f"{repo.url}/endless", 100_000)
        # announced too long: refused before reading the body
        with pytest.raises(LengthExceededError, match="announces"):
            fetcher.fetch(f"{repo.metadata_url}1.root.json", 10)
        assert fetcher.fetch(f"{repo.metadata_url}1.root.json", 1 << 20) == repo.initial_root


def test_fetcher_slow_retrieval(repo, hostile) -> None:
    repo.overrides["/slow"] = hostile["trickle"]
    with (
        HttpxFetcher(FetcherConfig(min_speed=1000, grace_seconds=0.5)) as fetcher,
        pytest.raises(SlowRetrievalError),
    ):
        fetcher.fetch(f"{repo.url}/slow", 1000)


def test_fetcher_http_errors(repo) -> None:
    with HttpxFetcher() as fetcher:
        with pytest.raises(FetchError) as info:
            fetcher.fetch(f"{repo.metadata_url}nope.json", 100)
        assert info.value.status_code == 404
        assert not isinstance(info.value, RejectedError)
        with pytest.raises(FetchError, match=r"InvalidURL|UnsupportedProtocol"):
            fetcher.fetch("http://[::1/x", 100)
    refused = httpx.MockTransport(lambda request: httpx.Response(500))
    with HttpxFetcher(transport=refused) as fetcher, pytest.raises(FetchError, match="HTTP 500"):
        fetcher.fetch("http://example.invalid/x", 100)


def test_connection_refused_is_a_transport_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nobody listens there
    with HttpxFetcher() as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(f"http://127.0.0.1:{port}/timestamp.json", 100)
    assert isinstance(info.value, OtaguardError) and not isinstance(info.value, RejectedError)


# -- decompression bomb -----------------------------------------------------------------------

BOMB_SIZE = 64 << 20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 MiB of zeros, gzipped twice: a few hundred bytes on the wire."""
    return gzip.compress(gzip.compress(bytes(BOMB_SIZE), 9), 9)


def test_decompression_bomb_is_refused_without_decoding(repo, bomb: bytes) -> None:
    """``Content-Encoding: gzip, gzip``: refused before a byte is decoded, memory stays small.

    Before, httpx decoded each read and the cap was checked afterwards: a 6.8 KB timestamp
    took the client to 8 GiB. Here the peak is measured, not the time.
    """
    assert len(bomb) < 16_384
    repo.overrides["/metadata/timestamp.json"] = respond(bomb, {"Content-Encoding": "gzip, gzip"})
    with HttpxFetcher() as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(FetchError) as refused:
                fetcher.fetch(f"{repo.metadata_url}timestamp.json", 16_384)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2 << 20, f"{peak} bytes allocated while refusing a {len(bomb)}-byte bomb"
    assert isinstance(refused.value, EncodingRefusedError)
    assert "'gzip, gzip' refused" in str(refused.value)


@pytest.mark.parametrize("header", ["gzip", "deflate", "br", "identity, gzip", "GZIP"])
def test_any_content_encoding_but_identity_is_refused(repo, header: str) -> None:
    body = gzip.compress(b"{}")
    repo.overrides["/x"] = respond(body, {"Content-Encoding": header})
    with HttpxFetcher() as fetcher, pytest.raises(EncodingRefusedError):
        fetcher.fetch(f"{repo.url}/x", 1000)


def test_identity_encoding_is_accepted_and_nothing_is_decoded(repo) -> None:
    repo.overrides["/identity"] = respond(b"{}", {"Content-Encoding": "identity"})
    raw = gzip.compress(b"{}")
    repo.overrides["/raw"] = respond(raw, {"Content-Type": "application/gzip"})
    with HttpxFetcher() as fetcher:
        assert fetcher.fetch(f"{repo.url}/identity", 100) == b"{}"
        assert fetcher.fetch(f"{repo.url}/raw", 100) == raw  # bytes as sent


def test_body_memory_is_bounded_by_the_cap(repo, hostile) -> None:
    """Endless data: what is held is the cap plus one network read, however much is sent."""
    repo.overrides["/endless"] = hostile["endless"]
    with HttpxFetcher() as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(LengthExceededError):
                fetcher.fetch(f"{repo.url}/endless", 300_000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 300_000 + (2 << 20)


# -- slow headers, slow redirects: one deadline for the whole exchange --------------------------

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def test_trickled_status_line_and_headers_are_cut_off(raw_server) -> None:
    """A server sending its status line and headers one byte at a time.

    Before, only the body counted against the deadline and each byte reset the 30 s read
    timeout: this response (6.5 s) was accepted, and 1 byte every 2 s held a client for hours.
    """
    server = raw_server(trickle(RESPONSE, 0.1))
    with HttpxFetcher(QUICK) as fetcher, pytest.raises(SlowRetrievalError, match="too slow"):
        fetcher.fetch(f"{server.url}/timestamp.json", 100)
    assert server.done.wait(60)
    assert server.hung_up and server.sent < len(RESPONSE) - 2, "client waited for the headers"


def test_slow_headers_within_the_deadline_are_fine(raw_server) -> None:
    server = raw_server(trickle(RESPONSE, 0.01))
    slow_but_ok = FetcherConfig(grace_seconds=60)
    with HttpxFetcher(slow_but_ok) as fetcher:
        assert fetcher.fetch(f"{server.url}/timestamp.json", 100) == b"{}"


def test_deadline_covers_redirects(repo) -> None:
    """Five hops, each answered after a pause: the hops together pass the deadline."""

    def hop(target: str) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
        def handler(request: http.server.BaseHTTPRequestHandler) -> None:
            time.sleep(0.3)
            request.send_response(302)
            request.send_header("Location", target)
            request.send_header("Content-Length", "0")
            request.end_headers()

        return handler

    for i in range(4):
        repo.overrides[f"/hop{i}"] = hop(f"/hop{i + 1}")
    repo.overrides["/hop4"] = respond(b"{}")
    with HttpxFetcher() as fetcher:
        assert fetcher.fetch(f"{repo.url}/hop0", 100) == b"{}"  # redirects are followed
    repo.requests.clear()
    with HttpxFetcher(QUICK) as fetcher, pytest.raises(SlowRetrievalError):
        fetcher.fetch(f"{repo.url}/hop0", 100)
    assert "/hop4" not in repo.requests


def test_each_fetch_gets_its_own_deadline(repo) -> None:
    """A reused connection is bounded by the deadline of the request it serves now."""
    repo.overrides["/ok"] = respond(b"{}")
    with HttpxFetcher(QUICK) as fetcher:
        for _ in range(3):
            assert fetcher.fetch(f"{repo.url}/ok", 100) == b"{}"
            time.sleep(0.3)  # three fetches take longer than one deadline together
