"""A real TUF repository (python-tuf's metadata API) served by a real local HTTP server.

``repo`` is a :class:`RepoSim`: it holds the roles and their signers, publishes
signed metadata into a directory (consistent snapshots: ``N.root.json``,
``N.snapshot.json``, ``N.targets.json``, hash-prefixed targets) and an
``http.server`` in a thread serves that directory. ``repo.overrides`` lets a
test serve hostile responses (endless data, trickle, other bytes) for a path,
and ``repo.requests`` records every path asked for.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib import parse

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from helpers_http import send, start_server
from otaguard.cli.main import run

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]
TOP = (Root.type, Timestamp.type, Snapshot.type, Targets.type)


def _expiry(days: float) -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(days=days)


class RepoSim:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.meta_dir = base / "served" / "metadata"
        self.targets_dir = base / "served" / "targets"
        self.meta_dir.mkdir(parents=True)
        self.targets_dir.mkdir(parents=True)
        self.signers: dict[str, list[Signer]] = {}
        self.md: dict[str, Metadata[Any]] = {}
        self.overrides: dict[str, Handler] = {}
        self.requests: list[str] = []
        root = Root(expires=_expiry(365))
        root.consistent_snapshot = True
        self.md[Root.type] = Metadata(root)
        for role in TOP:
            signer = CryptoSigner.generate_ed25519()
            self.signers[role] = [signer]
            root.add_key(signer.public_key, role)
        self.md[Timestamp.type] = Metadata(Timestamp(expires=_expiry(1)))
        self.md[Snapshot.type] = Metadata(Snapshot(expires=_expiry(7)))
        self.md[Targets.type] = Metadata(Targets(expires=_expiry(30)))
        self.publish_root()
        self.publish()
        self.initial_root = self.root_bytes(1)
        self._server = self._serve()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.metadata_url = f"{self.url}/metadata/"
        self.targets_url = f"{self.url}/targets/"

    # -- publishing -------------------------------------------------------------------------

    def sign(self, role: str, signers: list[Signer] | None = None) -> bytes:
        md = self.md[role]
        md.signatures.clear()
        for signer in signers if signers is not None else self.signers[role]:
            md.sign(signer, append=True)
        return md.to_bytes(JSONSerializer(compact=False))

    def root_bytes(self, version: int) -> bytes:
        return (self.meta_dir / f"{version}.root.json").read_bytes()

    def publish_root(self, extra_signers: list[Signer] | None = None) -> None:
        data = self.sign(Root.type, self.signers[Root.type] + (extra_signers or []))
        (self.meta_dir / f"{self.md[Root.type].signed.version}.root.json").write_bytes(data)

    def rotate_root(self, role: str, *, sign_with_old: bool = True) -> None:
        """Root v+1 replaces ``role``'s key with a new one."""
        root: Root = self.md[Root.type].signed
        old_root_signers = list(self.signers[Root.type])
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        new = CryptoSigner.generate_ed25519()
        root.add_key(new.public_key, role)
        self.signers[role] = [new]
        root.version += 1
        extra = old_root_signers if (role == Root.type and sign_with_old) else []
        self.publish_root(extra_signers=extra)

    def write_role(self, role: str) -> bytes:
        """Sign and write ``role`` (versioned name for snapshot/targets, plain for timestamp)."""
        data = self.sign(role)
        version = self.md[role].signed.version
        if role == Timestamp.type:
            (self.meta_dir / "timestamp.json").write_bytes(data)
        else:
            (self.meta_dir / f"{version}.{parse.quote(role, '')}.json").write_bytes(data)
        return data

    def publish(self, roles: list[str] | None = None, *, bump: bool = True) -> None:
        """Bump and write ``roles`` (default: targets), then snapshot and timestamp."""
        snapshot: Snapshot = self.md[Snapshot.type].signed
        for role in roles if roles is not None else [Targets.type]:
            if bump and (self.meta_dir / f"1.{parse.quote(role, '')}.json").exists():
                self.md[role].signed.version += 1
            self.write_role(role)
            snapshot.meta[f"{role}.json"] = MetaFile(self.md[role].signed.version)
        if bump and (self.meta_dir / "1.snapshot.json").exists():
            snapshot.version += 1
        snap = self.write_role(Snapshot.type)
        timestamp: Timestamp = self.md[Timestamp.type].signed
        if bump and (self.meta_dir / "timestamp.json").exists():
            timestamp.version += 1
        timestamp.snapshot_meta = MetaFile(
            snapshot.version, len(snap), {"sha256": hashlib.sha256(snap).hexdigest()}
        )
        self.write_role(Timestamp.type)

    def add_target(self, path: str, data: bytes, role: str = Targets.type) -> TargetFile:
        info = TargetFile.from_data(path, data, ["sha256"])
        self.md[role].signed.targets[path] = info
        directory, sep, name = path.rpartition("/")
        dest = self.targets_dir / f"{directory}{sep}{info.hashes['sha256']}.{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return info

    def delegate(
        self, delegator: str, name: str, paths: list[str], signer: Signer | None = None
    ) -> Signer:
        signer = signer or CryptoSigner.generate_ed25519()
        parent: Targets = self.md[delegator].signed
        if parent.delegations is None:
            parent.delegations = Delegations(keys={}, roles={})
        assert parent.delegations.roles is not None
        parent.delegations.roles[name] = DelegatedRole(name, [], 1, False, paths)
        parent.add_key(signer.public_key, name)
        if name not in self.md:
            self.md[name] = Metadata(Targets(expires=_expiry(30)))
            self.signers[name] = []
        self.signers[name].append(signer)
        return signer

    # -- serving ----------------------------------------------------------------------------

    def _serve(self) -> http.server.ThreadingHTTPServer:
        server, _ = start_server(self._get)
        return server

    def _get(self, request: http.server.BaseHTTPRequestHandler, path: str) -> None:
        self.requests.append(path)
        override = self.overrides.get(path)
        if override is not None:
            override(request)
            return
        # Files are stored under their quoted names ("1.%2Fabs.json"), so the
        # request path is mapped segment by segment without unquoting.
        segments = path.split("/")[1:]
        file = (self.base / "served").joinpath(*segments)
        if ".." in segments or not file.is_file():
            request.send_error(404)
            return
        send(request, file.read_bytes())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Client:
    """Runs ``otaguard tuf-client`` (in process, through the real CLI entry) on one repo."""

    def __init__(self, repo: RepoSim, base: Path) -> None:
        self.repo = repo
        self.metadata_dir = base / "client" / "metadata"
        self.target_dir = base / "client" / "targets"
        self.metadata_dir.mkdir(parents=True)
        self.target_dir.mkdir(parents=True)
        self.root_file = base / "initial_root.json"
        self.root_file.write_bytes(repo.initial_root)

    def init(self) -> int:
        return run(
            ["tuf-client", "--metadata-dir", str(self.metadata_dir), "init", str(self.root_file)]
        )

    def refresh(self) -> int:
        return run(
            [
                "tuf-client",
                "--metadata-url",
                self.repo.metadata_url,
                "--metadata-dir",
                str(self.metadata_dir),
                "refresh",
            ]
        )

    def download(self, *names: str) -> int:
        args = ["tuf-client", "--metadata-url", self.repo.metadata_url]
        args += ["--metadata-dir", str(self.metadata_dir)]
        for name in names:
            args += ["--target-name", name]
        args += ["--target-dir", str(self.target_dir), "--target-base-url", self.repo.targets_url]
        return run([*args, "download"])

    def version(self, role: str) -> int:
        data = (self.metadata_dir / f"{parse.quote(role, '')}.json").read_bytes()
        return int(Metadata.from_bytes(data).signed.version)

    def trusted(self) -> dict[str, bytes]:
        """Every file in the metadata directory, byte for byte (what a refusal must not change)."""
        return {p.name: p.read_bytes() for p in sorted(self.metadata_dir.iterdir())}

    def json_files(self) -> list[str]:
        return sorted(p.name for p in self.metadata_dir.glob("*.json"))

    def downloaded(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.target_dir.iterdir()}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[RepoSim]:
    sim = RepoSim(tmp_path / "repo")
    yield sim
    sim.close()


@pytest.fixture
def client(repo: RepoSim, tmp_path: Path) -> Client:
    c = Client(repo, tmp_path)
    assert c.init() == 0
    return c


def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """200 with no Content-Length and bytes until the client hangs up."""
    handler.send_response(200)
    handler.end_headers()
    try:
        for _ in range(100_000):
            handler.wfile.write(b" " * 65536)
    except OSError:
        pass


def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    """One byte every 50 ms: slow retrieval."""
    handler.send_response(200)
    handler.end_headers()
    try:
        for _ in range(400):
            handler.wfile.write(b"{")
            handler.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


@pytest.fixture
def hostile() -> dict[str, Handler]:
    return {"endless": endless, "trickle": trickle}
