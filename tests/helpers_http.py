"""A real HTTP server on 127.0.0.1 in a daemon thread, for tests that need one."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

Handle = Callable[[http.server.BaseHTTPRequestHandler, str], None]


def send(request: http.server.BaseHTTPRequestHandler, data: bytes) -> None:
    """A 200 response with an exact Content-Length."""
    request.send_response(200)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def start_server(handle: Handle) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve GET requests with ``handle(request, path)``; returns the server and its base URL."""
    from urllib import parse

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            handle(self, parse.urlsplit(self.path).path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
