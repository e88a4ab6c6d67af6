"""A static file server with honest HTTP Range support, and switches that make it misbehave.

Serves a directory over real HTTP (a thread of ``ThreadingHTTPServer``). By
default it behaves like nginx for a static file: ``Range: bytes=a-b`` gets
``206`` with ``Content-Range`` and exactly those bytes, an unsatisfiable range
``416``, no range ``200``. ``server.faults`` changes that for the next requests
of a path (each fault says how many requests it applies to), and
``server.log`` records every request as ``(path, range header)``. An ``api``
hook may answer requests itself first (the fleet stand-in of ``helpers_fleet``).
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib import parse

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Fault:
    """How to misbehave for ``times`` requests of a path (``times=-1``: always)."""

    ignore_range: bool = False  # 200 with the whole file
    cut_after: int | None = None  # close the connection after this many body bytes
    flip_at: int | None = None  # XOR 0x01 into this absolute file offset
    content_range: str | None = None  # a lying Content-Range header
    extra: bytes = b""  # bytes appended after the file (endless data), no Content-Length
    trickle: float | None = None  # seconds between 1-byte writes
    status: int | None = None  # answer this status with an empty body
    other_bytes: bytes | None = None  # serve these instead of the file
    times: int = 1


#: ``api(request, method, body)`` answers a request itself (True) or leaves it to the files.
Api = Callable[[http.server.BaseHTTPRequestHandler, str, bytes], bool]


class RangeServer:
    def __init__(self, root: Path, api: Api | None = None) -> None:
        self.root = root
        self.api = api
        self.faults: dict[str, list[Fault]] = {}
        self.log: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                return "Thu, 01 Jan 2026 00:00:00 GMT"  # answers replay byte for byte

            def do_GET(self) -> None:
                if server.api is None or not server.api(self, "GET", b""):
                    server._get(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if server.api is None or not server.api(self, "POST", body):
                    self.send_error(405)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self, path: str, fault: Fault) -> None:
        with self._lock:
            self.faults.setdefault(path, []).append(fault)

    def ranges(self, suffix: str) -> list[str | None]:
        """The Range headers of every request whose path ends with ``suffix``."""
        return [r for p, r in self.log if p.endswith(suffix)]

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path, [])
            if not queue:
                return None
            fault = queue[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    queue.pop(0)
            return fault

    def _get(self, request: http.server.BaseHTTPRequestHandler) -> None:
        path = parse.urlsplit(request.path).path
        header = request.headers.get("Range")
        with self._lock:
            self.log.append((path, header))
        fault = self._take_fault(path)
        segments = path.split("/")[1:]
        file = self.root.joinpath(*segments)
        if ".." in segments or not file.is_file():
            request.send_error(404)
            return
        data = file.read_bytes()
        if fault is not None and fault.other_bytes is not None:
            data = fault.other_bytes
        if fault is not None and fault.status is not None:
            request.send_response(fault.status)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        if fault is not None and fault.flip_at is not None and fault.flip_at < len(data):
            flipped = bytearray(data)
            flipped[fault.flip_at] ^= 0x01
            data = bytes(flipped)
        start, end = 0, len(data)
        match = _RANGE.match(header or "")
        ranged = match is not None and not (fault is not None and fault.ignore_range)
        if ranged:
            assert match is not None
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
            if start >= len(data) or start >= end:
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(data)}")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(206)
            content_range = f"bytes {start}-{end - 1}/{len(data)}"
            if fault is not None and fault.content_range is not None:
                content_range = fault.content_range
            request.send_header("Content-Range", content_range)
        else:
            request.send_response(200)
        body = data[start:end]
        if fault is not None and fault.extra:
            request.send_header("Connection", "close")
            request.end_headers()
            self._write(request, body + fault.extra, fault)
            request.close_connection = True
            return
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Accept-Ranges", "bytes")
        request.end_headers()
        self._write(request, body, fault)

    @staticmethod
    def _write(
        request: http.server.BaseHTTPRequestHandler, body: bytes, fault: Fault | None
    ) -> None:
        try:
            if fault is not None and fault.cut_after is not None:
                request.wfile.write(body[: fault.cut_after])
                request.wfile.flush()
                request.close_connection = True
                request.connection.shutdown(2)
                return
            if fault is not None and fault.trickle is not None:
                for i in range(len(body)):
                    request.wfile.write(body[i : i + 1])
                    request.wfile.flush()
                    time.sleep(fault.trickle)
                return
            request.wfile.write(body)
        except OSError:
            request.close_connection = True
