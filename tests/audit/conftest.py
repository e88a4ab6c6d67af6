"""Debian's nginx serving a directory on an ephemeral port (the untrusted mirror or CDN
of a static log export). The Makefile's system-deps installs nginx; no nginx, no pass."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_CONF = """
worker_processes 1;
daemon off;
user root;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/tmp-body;
    proxy_temp_path {base}/tmp-proxy;
    fastcgi_temp_path {base}/tmp-fastcgi;
    uwsgi_temp_path {base}/tmp-uwsgi;
    scgi_temp_path {base}/tmp-scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /checkpoint {{ default_type "text/plain; charset=utf-8"; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory served, its base URL)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert binary, "nginx is not installed: run the tests through 'make test'"
    root = tmp_path / "www"
    root.mkdir()
    base = tmp_path / "nginx"
    base.mkdir()
    for attempt in range(5):
        port = _free_port()
        conf = base / "nginx.conf"
        conf.write_text(_CONF.format(base=base, root=root, port=port))
        process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(base), "-e", str(base / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None and not _listening(port):
            time.sleep(0.05)
        if process.poll() is None and _listening(port):
            break
        process.kill()
        process.wait()
        assert attempt < 4, (base / "error.log").read_text(errors="replace")
    try:
        yield root, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
