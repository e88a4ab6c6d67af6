"""Debian's nginx serving a directory on an ephemeral port: an untrusted mirror or CDN.

The Makefile's ``system-deps`` installs nginx; no nginx, no pass (never a skip).
nginx serves static files as a CDN would: ``Range`` (206), ``ETag``,
``If-None-Match`` (304). Its access log records each request's URI, status and
``Range`` header, so tests can see what a client asked for.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

_CONF = """
worker_processes 1;
daemon off;
user root;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format requests '$request_method $request_uri $status "$http_range"';
    access_log {base}/access.log requests;
    client_body_temp_path {base}/tmp-body;
    proxy_temp_path {base}/tmp-proxy;
    fastcgi_temp_path {base}/tmp-fastcgi;
    uwsgi_temp_path {base}/tmp-uwsgi;
    scgi_temp_path {base}/tmp-scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
{locations}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Nginx:
    """nginx serving ``root`` until :meth:`stop` (``locations``: extra server directives)."""

    def __init__(self, root: Path, base: Path, locations: str = "") -> None:
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        assert binary, "nginx is not installed: run the tests through 'make test'"
        self.root = root
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            conf = base / "nginx.conf"
            conf.write_text(_CONF.format(base=base, root=root, port=self.port, locations=locations))
            self.process = subprocess.Popen(
                [binary, "-c", str(conf), "-p", str(base), "-e", str(base / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while (
                time.monotonic() < deadline
                and self.process.poll() is None
                and not _listening(self.port)
            ):
                time.sleep(0.05)
            if self.process.poll() is None and _listening(self.port):
                break
            self.process.kill()
            self.process.wait()
            assert attempt < 4, (base / "error.log").read_text(errors="replace")
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str, int, str]]:
        """(method, URI, status, Range header) of every request so far."""
        log = self.base / "access.log"
        out = []
        for line in log.read_text().splitlines() if log.exists() else []:
            method, uri, status, rng = line.split(" ", 3)
            out.append((method, uri, int(status), rng.strip('"')))
        return out

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
