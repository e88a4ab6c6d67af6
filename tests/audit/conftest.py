"""Debian's nginx serving a directory on an ephemeral port (the untrusted mirror or CDN
of a static log export). The Makefile's system-deps installs nginx; no nginx, no pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_nginx import Nginx


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory served, its base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = Nginx(
        root,
        tmp_path / "nginx",
        locations='        location = /checkpoint { default_type "text/plain; charset=utf-8"; }',
    )
    try:
        yield root, server.url
    finally:
        server.stop()
