"""A fleet for the agent's tests: a real image repository, a director, a stand-in device API.

The repository is made by the real CLI (``otaguard repo init/add-target/sign/
publish``); the director's metadata by ``otaguard.repo.director``; requests are
checked with ``otaguard.protocol.signing`` -- real parts. What is a stand-in is
the server around them: a threaded HTTP server that follows docs/server.md's
device API (enrol, state, check-in with ETag/304 and 409 ``state-unknown``,
events) and serves the repository's files with honest HTTP Range
(``helpers_range``). It lets the agent be tested apart from the fleet server
(``tests/agent/test_e2e_server.py`` runs it against the real one), and its
switches play a compromised server: other director keys, an older director
version, instructions for images the repository does not hold, other bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import parse

from cryptography import x509
from tuf.api.metadata import TargetFile

from helpers import make_image
from helpers_range import RangeServer
from otaguard.cli.main import run
from otaguard.crypto.keys import (
    KeyType,
    PrivateKey,
    generate_private_key,
    private_key_pem,
    public_key_pem,
)
from otaguard.crypto.signer import KeySigner, Signer
from otaguard.errors import RejectedError
from otaguard.protocol.signing import HEADER_DEVICE, HEADER_NONCE, verify_request
from otaguard.repo.director import EcuInstruction, director_root, director_targets, instruction_for
from otaguard.repo.repository import ImageRepository

HW = "acme-ecu-v2"
API = "/api/v1/device"


def cli(*args: object) -> None:
    code = run([str(a) for a in args])
    assert code == 0, (args, code)


class DeviceCa:
    """A device CA made by ``otaguard pki``; ``issue(id)`` makes an identity directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        cli("pki", "init-root", "--out-dir", base / "root", "--subject", "CN=Acme Devices Root")
        cli(
            "pki",
            "issue-intermediate",
            "--ca",
            base / "root",
            "--out-dir",
            base / "ca",
            "--purpose",
            "device-identity",
        )
        self.cert = base / "ca" / "cert.pem"

    def issue(self, device_id: str, out: Path, key: str | None = None) -> Path:
        """``pki issue-device``; ``key``: an existing key (a PKCS#11 URI: ``key.uri``)."""
        extra = ["--key", key] if key else []
        ca = self.base / "ca"
        cli("pki", "issue-device", "--ca", ca, "--out-dir", out, "--device-id", device_id, *extra)
        return out


@dataclass
class DeviceRecord:
    key: Any
    ecus: dict[str, str]
    state_hash: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    assignment: dict[str, str] = field(default_factory=dict)  # ECU serial -> target path


class Fleet:
    """Release managers, a repository, a director, and the stand-in server in front of them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.release_key = self._key("release")
        self._key("root")
        self._key("targets")
        self.repo_dir = base / "repo"
        cli(
            "repo",
            "init",
            self.repo_dir,
            "--root-key",
            base / "root.pem",
            "--targets-key",
            base / "targets.pub",
        )
        cli(
            "repo", "sign", self.repo_dir, "--key", base / "root.pem", "--key", base / "targets.pem"
        )
        cli("repo", "publish", self.repo_dir)
        self.repo_root = (self.repo_dir / "metadata" / "1.root.json").read_bytes()
        self.director_key = KeySigner(generate_private_key(KeyType.ED25519))
        self.director_signers: list[Signer] = [self.director_key]
        self.director_root = director_root(
            [self.director_key],
            threshold=1,
            version=1,
            expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=365),
        )
        self.devices: dict[str, DeviceRecord] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, int]] = []
        self.nonces: set[tuple[str, str]] = set()
        self.deltas: dict[tuple[str, str], str] = {}  # (base image sha256, full target) -> delta
        self.metadata_url = "/metadata/"
        self.targets_url = "/targets/"
        self.version_override: int | None = None
        self.extra_instructions: list[EcuInstruction] = []
        # campaigns (the campaign contract): what the answer names, per device
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, list[dict[str, str]]] = {}
        self.push: dict[str, Any] | None = None
        self.health: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.server = RangeServer(self.repo_dir, api=self._api)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    def _key(self, name: str) -> PrivateKey:
        key = generate_private_key(KeyType.ED25519)
        (self.base / f"{name}.pem").write_bytes(private_key_pem(key, None))
        (self.base / f"{name}.pub").write_bytes(public_key_pem(key.public_key()))
        return key

    # -- releases ---------------------------------------------------------------------------

    def image(self, version: str, counter: int, payload: bytes) -> bytes:
        return make_image(
            payload,
            [self.release_key],
            version=version,
            security_counter=counter,
            hardware_ids=(HW,),
        )

    def publish(self, name: str, data: bytes, replaces: Sequence[str] = ()) -> str:
        """Add ``data`` as target ``name`` (verified by add-target), sign, publish;
        ``replaces``: the installed versions it declares it may replace."""
        file = self.base / "staging" / name.replace("/", "_")
        file.parent.mkdir(exist_ok=True)
        file.write_bytes(data)
        declared = [a for v in replaces for a in ("--compatible-with", v)]
        cli(
            "repo", "add-target", self.repo_dir, file, "--name", name,
            "--trusted-key", self.base / "release.pub", *declared,
        )  # fmt: skip
        cli("repo", "sign", self.repo_dir, "--key", self.base / "targets.pem")
        cli("repo", "publish", self.repo_dir)
        return name

    def release(self, version: str, counter: int, payload: bytes) -> tuple[str, bytes]:
        image = self.image(version, counter, payload)
        return self.publish(f"{HW}/{version}.img", image), image

    def release_delta(self, old: bytes, new: bytes, new_name: str, **kwargs: Any) -> str:
        import io

        from otaguard.delta.package import create

        out = io.BytesIO()
        create(old, new, out, [KeySigner(self.release_key)], **kwargs)
        base = new_name.rsplit("/", 1)[-1].removesuffix(".img")
        name = self.publish(
            f"{HW}/delta-{hashlib.sha256(old).hexdigest()[:8]}-{base}.delta", out.getvalue()
        )
        self.deltas[(hashlib.sha256(old).hexdigest(), new_name)] = name
        return name

    def target_info(self, path: str) -> TargetFile:
        targets = ImageRepository(self.repo_dir).published("targets", fresh=True)
        assert targets is not None
        return targets.signed.targets[path]  # type: ignore[no-any-return]

    def assign(self, device_id: str, target: str, ecu: str = "main") -> None:
        with self._lock:
            record = self.devices[device_id]
            record.assignment[ecu] = target
            record.generation += 1

    def offer(self, device_id: str, target: str, campaign: str, wave: int = 0) -> None:
        """Assign ``target`` under ``campaign`` (the answer names it)."""
        with self._lock:
            self.campaigns[device_id] = {"id": campaign, "wave": wave}
        self.assign(device_id, target)

    def halt(self, device_id: str, action: str, back_to: str | None) -> None:
        """The campaign halts: ``action`` for it, the assignment back to ``back_to``."""
        with self._lock:
            record = self.devices[device_id]
            campaign = self.campaigns[device_id]["id"]
            self.actions[device_id] = [{"kind": action, "campaign": campaign}]
            if back_to is None:
                record.assignment.clear()
            else:
                record.assignment["main"] = back_to
            record.generation += 1

    def timestamp_version(self) -> int:
        data = json.loads((self.repo_dir / "metadata" / "timestamp.json").read_bytes())
        return int(data["signed"]["version"])

    # -- the device API ---------------------------------------------------------------------

    def _answer(
        self,
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> bool:
        data = b"" if body is None else json.dumps(body).encode()
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
        with self._lock:
            self.requests.append((request.command, request.path, status))
        return True

    def _api(self, request: http.server.BaseHTTPRequestHandler, method: str, body: bytes) -> bool:
        split = parse.urlsplit(request.path)
        if not split.path.startswith(API + "/"):
            return False
        endpoint = split.path[len(API) :]
        device_id = request.headers.get(HEADER_DEVICE, "")
        with self._lock:
            record = self.devices.get(device_id)
        key = record.key if record is not None else None
        if endpoint == "/enroll" and method == "POST":
            try:
                payload = json.loads(body)
                leaf = x509.load_pem_x509_certificates(payload["chain_pem"].encode())[0]
            except (ValueError, KeyError):
                return self._answer(request, 422, {"error": "malformed"})
            key = leaf.public_key()
        if key is None:
            return self._answer(request, 401, {"error": "unknown-device"})
        try:
            signed = verify_request(
                key,
                request.headers,  # type: ignore[arg-type]
                method=method,
                path=split.path,
                query=split.query,
                body=body,
                now=int(time.time()),
            )
        except RejectedError as exc:
            return self._answer(request, 401, {"error": exc.check})
        with self._lock:
            if (signed.device_id, signed.nonce) in self.nonces:
                return self._answer(request, 401, {"error": "request-replay"})
            self.nonces.add((signed.device_id, signed.nonce))
        if endpoint == "/enroll" and method == "POST":
            with self._lock:
                created = signed.device_id not in self.devices
                if created:
                    ecus = {e["serial"]: e["hardware_id"] for e in payload["ecus"]}
                    self.devices[signed.device_id] = DeviceRecord(key, ecus)
            answer = {
                "device_id": signed.device_id,
                "group": "eu",
                "hardware_id": HW,
                "region": "eu",
                "tags": {},
                "poll_interval_s": 60,
            }
            return self._answer(request, 201 if created else 200, answer)
        assert record is not None
        if endpoint == "/state" and method == "POST":
            state = json.loads(body)
            canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            with self._lock:
                record.state = state
                record.state_hash = hashlib.sha256(canonical.encode()).hexdigest()
            return self._answer(request, 200, {"state": record.state_hash})
        if endpoint == "/events" and method == "POST":
            events = json.loads(body)["events"]
            with self._lock:
                known = {e["id"] for e in self.events}
                new = [{**e, "device": signed.device_id} for e in events if e["id"] not in known]
                self.events.extend(new)
            return self._answer(request, 200, {"accepted": len(new)})
        if endpoint == "/health" and method == "POST":
            report = json.loads(body)
            assert set(report) == {"campaign", "window_s", "counts", "flags", "metrics"}, report
            assert 0 < report["window_s"] <= 7 * 86400
            with self._lock:
                self.health.append({**report, "device": signed.device_id})
            return self._answer(request, 200, {"accepted": 1})
        if endpoint == "/update" and method == "GET":
            return self._update(request, record, signed.device_id, parse.parse_qs(split.query))
        return self._answer(request, 404, {"error": "not-found"})

    def etag(self, record: DeviceRecord) -> str:
        device = next((d for d, r in self.devices.items() if r is record), "")
        extra = json.dumps(
            [self.campaigns.get(device), self.actions.get(device), self.push], sort_keys=True
        )
        key = f"{record.generation}:{record.state_hash}:{self.timestamp_version()}:{extra}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def _update(
        self,
        request: http.server.BaseHTTPRequestHandler,
        record: DeviceRecord,
        device_id: str,
        query: dict[str, list[str]],
    ) -> bool:
        if query.get("state", [""])[0] != record.state_hash:
            return self._answer(request, 409, {"error": "state-unknown"})
        etag = self.etag(record)
        if request.headers.get("If-None-Match") == f'"{etag}"':
            return self._answer(request, 304)
        installed = {e["serial"]: e.get("sha256") for e in record.state.get("ecus", [])}
        instructions = []
        for ecu, target in sorted(record.assignment.items()):
            name = self.deltas.get((installed.get(ecu) or "", target), target)
            instructions.append(instruction_for(self.target_info(name), {ecu: record.ecus[ecu]}))
        director = director_targets(
            device_id=device_id,
            nonce=request.headers[HEADER_NONCE],
            instructions=instructions + self.extra_instructions,
            version=self.version_override or max(record.generation, 1),
            expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            signers=self.director_signers,
        )
        import base64

        answer = {
            "etag": etag,
            "director": base64.b64encode(director).decode(),
            "repository": {"metadata_url": self.metadata_url, "targets_url": self.targets_url},
            "poll_interval_s": 60,
            "actions": self.actions.get(device_id, []),
            "campaign": self.campaigns.get(device_id),
            "push": self.push,
        }
        return self._answer(request, 200, answer, {"ETag": f'"{etag}"'})

    def kinds(self, device_id: str | None = None) -> list[str]:
        return [e["kind"] for e in self.events if device_id in (None, e["device"])]
