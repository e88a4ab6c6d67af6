"""Helpers for the image-repository tests: keys on disk, signed images, a server, clients.

``Served`` serves a repository directory's ``metadata/`` and ``targets/`` (and
nothing else) over real HTTP; ``overrides`` maps a request path to hostile
bytes, ``requests`` records every path asked for.
"""

from __future__ import annotations

import datetime
import http.server
import shutil
from pathlib import Path
from typing import Any
from urllib import parse

from helpers import make_image
from helpers_http import send, start_server
from otaguard.cli.main import run
from otaguard.crypto.keys import (
    KeyType,
    PrivateKey,
    generate_private_key,
    private_key_pem,
    public_key_pem,
)
from otaguard.repo.client import TufClient
from otaguard.repo.fetcher import HttpxFetcher


class Keys:
    """Key files in one directory: ``keys.priv("eu")`` / ``keys.pub("eu")`` (made on first use)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.private: dict[str, PrivateKey] = {}

    def make(self, name: str, key_type: KeyType = KeyType.ED25519) -> PrivateKey:
        if name not in self.private:
            key = generate_private_key(key_type)
            self.private[name] = key
            (self.base / f"{name}.pem").write_bytes(private_key_pem(key, None))
            (self.base / f"{name}.pub").write_bytes(public_key_pem(key.public_key()))
        return self.private[name]

    def priv(self, name: str) -> str:
        self.make(name)
        return str(self.base / f"{name}.pem")

    def pub(self, name: str) -> str:
        self.make(name)
        return str(self.base / f"{name}.pub")


def image_file(
    path: Path, key: PrivateKey, payload: bytes = b"firmware " * 300, **extra: Any
) -> Path:
    path.write_bytes(make_image(payload, [key], **extra))
    return path


def cli(*args: str | Path) -> int:
    return run([str(a) for a in args])


class Served:
    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.overrides: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.server, self.url = start_server(self._get)
        self.metadata_url = f"{self.url}/metadata/"
        self.targets_url = f"{self.url}/targets/"

    def _get(self, request: http.server.BaseHTTPRequestHandler, path: str) -> None:
        self.requests.append(path)
        data = self.overrides.get(path)
        if data is None:
            segments = [parse.unquote(s) for s in path.split("/")[1:]]
            ok = segments and segments[0] in {"metadata", "targets"}
            file = self.repo_dir.joinpath(*segments)
            if not ok or ".." in segments or not file.is_file():
                request.send_error(404)
                return
            data = file.read_bytes()
        send(request, data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OurClient:
    """otaguard's TufClient on a served repository, one session per call."""

    def __init__(self, served: Served, base: Path) -> None:
        self.served = served
        self.metadata_dir = base / "client-metadata"
        self.target_dir = base / "client-targets"
        self.metadata_dir.mkdir(parents=True)
        self.target_dir.mkdir(parents=True)
        shutil.copy(served.repo_dir / "metadata" / "1.root.json", self.metadata_dir / "root.json")

    def session(self, now: datetime.datetime | None = None) -> tuple[TufClient, HttpxFetcher]:
        fetcher = HttpxFetcher()
        return TufClient(self.metadata_dir, self.served.metadata_url, fetcher, now=now), fetcher

    def refresh(self, now: datetime.datetime | None = None) -> None:
        client, fetcher = self.session(now)
        with fetcher:
            client.refresh()

    def download(self, name: str, now: datetime.datetime | None = None) -> tuple[bytes, Any]:
        """The verified target bytes and its TargetFile (raises if anything is refused)."""
        client, fetcher = self.session(now)
        with fetcher:
            info = client.target_info(name)
            if info is None:
                raise LookupError(f"no target {name}")
            path = client.download_target(info, self.served.targets_url, self.target_dir)
            return path.read_bytes(), info

    def version(self, role: str) -> int:
        from tuf.api.metadata import Metadata

        data = (self.metadata_dir / f"{parse.quote(role, '')}.json").read_bytes()
        return int(Metadata.from_bytes(data).signed.version)
