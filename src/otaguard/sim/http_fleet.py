"""A fleet of lightweight agents over real HTTP: many devices in one asyncio process.

:mod:`otaguard.sim.engine` simulates 5 million devices against the campaign
evaluator's pure code; this module checks the same story end to end, through
the real server's device API, with as many devices as one process can drive
(>= 1,000 on loopback). Each :class:`LightDevice` follows the device protocol
exactly as the real agent does -- and with the same code for what matters:

* every request is signed by :func:`otaguard.protocol.signing.sign_request`
  with the device's own Ed25519 identity (a certificate from the enrolled
  device CA, :func:`otaguard.pki.issue.build_device`);
* the state body and its hash are :func:`otaguard.protocol.state.canonical_json`;
* a check-in answer is parsed by the agent's own parser
  (:func:`otaguard.agent.api.parse_update_answer`: campaign, actions, push)
  and its director metadata verified by :func:`otaguard.repo.uptane.verify_director`
  and :func:`~otaguard.repo.uptane.cross_check` (signature, expiry, this device,
  this request's nonce, the image repository's targets);
* push wakes it through the agent's :class:`otaguard.agent.push.Subscriber`.

What it does not do is flash a device model: when offered a release it reports
the events a real agent would (download-started, downloaded, installed,
boot-trial, then confirmed or reverted), their outcome drawn from a failure
rate per target, with a check-in before installing (``abandon``) and one in the
trial (``revert``) as the real agent does; then health for the campaign, and
health as control while not updated.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib import parse

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tuf.api.metadata import Root, TargetFile

from otaguard.agent.api import UpdateAnswer, parse_update_answer
from otaguard.agent.push import Subscriber, Wake
from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner, Signer
from otaguard.errors import OtaguardError
from otaguard.pki.issue import Issuer, build_device
from otaguard.protocol.signing import sign_request
from otaguard.protocol.state import canonical_json, state_hash
from otaguard.repo.uptane import Vehicle, cross_check, verify_director

API = "/api/v1/device"
ECU = "main"


@dataclass(frozen=True)
class Image:
    """A release as a device knows it after installing it (what its state reports)."""

    target: str | None
    version: str
    sha256: str
    security_counter: int


@dataclass(frozen=True)
class LightIdentity:
    device_id: str
    signer: Signer
    chain_pem: str


def issue_identities(
    issuer: Issuer, chain: list[x509.Certificate], prefix: str, count: int
) -> list[LightIdentity]:
    """``count`` device identities (Ed25519 keys, certificates by ``issuer``), in memory."""
    now = dt.datetime.now(dt.UTC)
    tail = b"".join(c.public_bytes(Encoding.PEM) for c in chain if c.subject != c.issuer)
    out = []
    for i in range(count):
        key = generate_private_key(KeyType.ED25519)
        device_id = f"{prefix}{i:06d}"
        cert = build_device(
            issuer,
            key.public_key(),
            device_id,
            not_before=now - dt.timedelta(hours=1),
            not_after=now + dt.timedelta(days=30),
        )
        pem = cert.public_bytes(Encoding.PEM) + tail
        out.append(LightIdentity(device_id, KeySigner(key), pem.decode()))
    return out


@dataclass(frozen=True)
class FleetConfig:
    server: str
    hardware_id: str
    director_root: Root
    #: what the repository lists (director entries are cross-checked against it)
    repository: Mapping[str, TargetFile]
    #: what every device runs at the start (its factory image)
    factory: Image
    #: the releases a campaign may offer: target path -> what the device then runs
    releases: Mapping[str, Image]
    #: target path -> probability that the update fails at boot (reverted, deterministic)
    failure_rate: Mapping[str, float] = field(default_factory=dict)
    poll_s: float = 2.0
    download_s: float = 0.5  # mean; exponential
    trial_s: float = 0.5
    health_window_s: float = 2.0
    #: devices that subscribe to push (the first ones), broker from the check-in answer
    push_devices: int = 0
    seed: int = 0
    timeout_s: float = 30.0


@dataclass
class FleetStats:
    """What the fleet did (for the test, the bench and the demo's report)."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # "target:outcome"
    errors: Counter[str] = field(default_factory=Counter)
    health_reports: int = 0
    #: (monotonic time, the push's spread) of every check-in a push brought forward
    pushed_checkins: list[tuple[float, float]] = field(default_factory=list)
    started_by: dict[str, set[str]] = field(default_factory=dict)  # target -> device ids

    def count(self, target: str, outcome: str) -> int:
        return self.outcomes[f"{target}:{outcome}"]


class Refused(Exception):
    """The server answered what the protocol does not allow here (a bug to report)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class LightDevice:
    """One device: a coroutine following the device protocol (docs/server.md)."""

    def __init__(
        self,
        identity: LightIdentity,
        config: FleetConfig,
        client: httpx.AsyncClient,
        stats: FleetStats,
        rng: random.Random,
        *,
        push: bool = False,
    ) -> None:
        self.id = identity.device_id
        self.identity = identity
        self.config = config
        self.client = client
        self.stats = stats
        self.rng = rng
        self.running = config.factory
        self.state_key: str | None = None
        self.etag: str | None = None
        self.director_version = 0
        self.failed: set[str] = set()  # targets that failed here: never tried again
        self.health_since = time.monotonic()
        self.health_campaign: str | None = None
        self.wake = Wake()
        self.subscriber: Subscriber | None = None
        self.want_push = push

    # -- requests --------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        endpoint: str,
        body: bytes = b"",
        query: str = "",
        headers: Mapping[str, str] | None = None,
        nonce: str | None = None,
    ) -> httpx.Response:
        nonce = nonce or secrets.token_hex(16)
        path = API + endpoint
        signed = sign_request(
            self.identity.signer,
            device_id=self.id,
            method=method,
            path=path,
            query=query,
            body=body,
            time=int(time.time()),
            nonce=nonce,
        )
        all_headers = {**signed, **(headers or {})}
        if body:
            all_headers["Content-Type"] = "application/json"
        url = self.config.server.rstrip("/") + path + (f"?{query}" if query else "")
        self.stats.requests[endpoint] += 1
        response = await self.client.request(method, url, content=body, headers=all_headers)
        self.stats.statuses[response.status_code] += 1
        return response

    async def _post(self, endpoint: str, value: Any) -> dict[str, Any]:
        response = await self._send("POST", endpoint, canonical_json(value))
        if response.status_code not in (200, 201):
            raise Refused(f"{endpoint}: HTTP {response.status_code} {response.text[:200]}")
        answer: dict[str, Any] = response.json()
        return answer

    async def enroll(self) -> None:
        ecus = [{"serial": ECU, "hardware_id": self.config.hardware_id}]
        await self._post("/enroll", {"chain_pem": self.identity.chain_pem, "ecus": ecus})

    def _state(self, boot: str = "confirmed", image: Image | None = None) -> dict[str, Any]:
        image = image or self.running
        ecu = {
            "serial": ECU,
            "hardware_id": self.config.hardware_id,
            "target": image.target,
            "version": image.version,
            "security_counter": image.security_counter,
            "sha256": image.sha256,
            "slot": "a",
            "boot": boot,
        }
        return {"ecus": [ecu]}

    async def report_state(self, boot: str = "confirmed", image: Image | None = None) -> None:
        """What runs: ``image`` on trial (boot "trial"), else the confirmed one."""
        body = self._state(boot, image)
        answer = await self._post("/state", body)
        if answer.get("state") != state_hash(body):
            raise Refused("/state: the server's hash is not the state's")
        self.state_key = answer["state"]

    async def check_in(self, *, fresh: bool = False) -> UpdateAnswer | None:
        nonce = secrets.token_hex(16)
        headers = {} if fresh or self.etag is None else {"If-None-Match": f'"{self.etag}"'}
        query = parse.urlencode({"state": self.state_key or ""})
        self.wake.take()
        response = await self._send("GET", "/update", query=query, headers=headers, nonce=nonce)
        if response.status_code == 304:
            return None
        if response.status_code == 409:
            await self.report_state()
            return await self.check_in(fresh=fresh)
        if response.status_code != 200:
            raise Refused(f"/update: HTTP {response.status_code} {response.text[:200]}")
        answer = parse_update_answer(response.json(), response, nonce, self.config.server)
        if self.want_push and answer.push is not None and answer.push.broker:
            if self.subscriber is None:
                self.subscriber = Subscriber(self.wake, f"light-{self.id}", default_spread=0.0)
            self.subscriber.follow(answer.push.broker, answer.push.topics)
        return answer

    async def events(
        self, campaign: str | None, target: str, *kinds: tuple[str, str | None]
    ) -> None:
        records = []
        for kind, check in kinds:
            record: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "time": _now(),
                "kind": kind,
                "ecu": ECU,
                "target": target,
                "result": "ok" if check is None else "failed",
                "failure": None if check is None else "deterministic",
                "check": check,
                "detail": "",
            }
            if campaign is not None:
                record["campaign"] = campaign
            records.append(record)
        await self._post("/events", {"events": records})

    async def health(self) -> None:
        window = max(time.monotonic() - self.health_since, 0.001)
        report = {
            "campaign": self.health_campaign,
            "window_s": min(window, 7 * 86400.0),
            "counts": {"resets": 0, "crashes": 0},
            "flags": {"heartbeat_lost": False},
            "metrics": {},
        }
        await self._post("/health", report)
        self.stats.health_reports += 1
        self.health_since = time.monotonic()
        self.health_campaign = None

    # -- what an answer brings --------------------------------------------------------------

    def _offer(self, answer: UpdateAnswer) -> str | None:
        """The target the verified director metadata names for our ECU, if new to us."""
        targets = verify_director(
            answer.director,
            self.config.director_root,
            Vehicle(self.id, {ECU: self.config.hardware_id}),
            nonce=answer.nonce,
            now=dt.datetime.now(dt.UTC),
            last_version=self.director_version,
        )
        self.director_version = max(self.director_version, targets.version)
        instructions = cross_check(
            targets, Vehicle(self.id, {ECU: self.config.hardware_id}), self.config.repository.get
        )
        for instruction in instructions:
            path = instruction.target.path
            if instruction.ecu_serial == ECU and path != self.running.target:
                return path
        return None

    async def act(self, answer: UpdateAnswer) -> None:
        target = self._offer(answer)
        campaign = answer.campaign.id if answer.campaign is not None else None
        if target is None or target in self.failed or target not in self.config.releases:
            self.etag = answer.etag
            return
        if campaign is None:
            self.stats.outcomes[f"{target}:offered-without-campaign"] += 1
        started = self.stats.started_by.setdefault(target, set())
        started.add(self.id)
        await self.events(campaign, target, ("download-started", None))
        pushed = await self._pause(self.rng.expovariate(1.0 / self.config.download_s))
        if pushed is not None:  # a push ended the download early (as the agent's Recheck)
            self.stats.pushed_checkins.append((time.monotonic(), pushed))
        again = await self.check_in(fresh=True)  # the real agent checks in before installing
        if again is not None and again.wants("abandon", campaign):
            await self.events(campaign, target, ("abandoned", None))
            self._outcome(target, "abandoned")
            self.etag = None
            return
        await self.events(
            campaign, target, ("downloaded", None), ("installed", None), ("boot-trial", None)
        )
        await self.report_state("trial", self.config.releases[target])  # the new image, on trial
        pushed = await self._pause(self.rng.expovariate(1.0 / self.config.trial_s))
        if pushed is not None:
            self.stats.pushed_checkins.append((time.monotonic(), pushed))
        trial = await self.check_in(fresh=True)  # as the agent's trial check-in
        if trial is not None and trial.wants("revert", campaign):
            await self.events(campaign, target, ("reverted", "halt"))
            await self.report_state()
            self._outcome(target, "reverted-told")
            self.etag = None
            return
        if self.rng.random() < self.config.failure_rate.get(target, 0.0):
            await self.events(campaign, target, ("reverted", "boot"))
            await self.report_state()
            self.failed.add(target)
            self._outcome(target, "reverted")
            self.etag = None
            return
        await self.events(campaign, target, ("confirmed", None))
        self.running = self.config.releases[target]
        await self.report_state()
        self._outcome(target, "confirmed")
        self.health_since = time.monotonic()
        self.health_campaign = campaign
        self.etag = None

    def _outcome(self, target: str, outcome: str) -> None:
        self.stats.outcomes[f"{target}:{outcome}"] += 1

    async def _pause(self, seconds: float) -> float | None:
        """Sleep ``seconds``, shortened by a push to a random delay in ``[0, spread_s]``.

        The push's spread when one came during the wait (the next check-in is pushed).
        """
        end = time.monotonic() + seconds
        pushed: float | None = None
        while (left := end - time.monotonic()) > 0:
            spread = self.wake.wait(0.0)
            if spread is not None and pushed is None:
                pushed = spread
                end = min(end, time.monotonic() + self.rng.uniform(0.0, spread))
                continue
            await asyncio.sleep(min(left, 0.05))
        return pushed

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.enroll()
            await self.report_state()
            await self._pause(self.rng.uniform(0, self.config.poll_s))  # spread the first calls
            pushed: float | None = None
            while not stop.is_set():
                try:
                    if pushed is not None:
                        self.stats.pushed_checkins.append((time.monotonic(), pushed))
                    answer = await self.check_in()
                    if answer is not None:
                        await self.act(answer)
                    if time.monotonic() - self.health_since >= self.config.health_window_s:
                        await self.health()
                except (httpx.HTTPError, Refused, OtaguardError) as exc:
                    self.stats.errors[type(exc).__name__] += 1
                jitter = self.rng.uniform(0.5, 1.5)
                pushed = await self._pause(self.config.poll_s * jitter)
        finally:
            if self.subscriber is not None:
                self.subscriber.close()


async def run_fleet(
    config: FleetConfig,
    identities: list[LightIdentity],
    until: Any,
    *,
    stats: FleetStats | None = None,
    max_connections: int = 200,
) -> FleetStats:
    """Run every device until ``until(stats)`` (a coroutine function) returns."""
    stats = stats or FleetStats()
    rng = random.Random(config.seed)  # noqa: S311 - outcomes, not secrets
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits) as client:
        devices = [
            LightDevice(
                ident,
                config,
                client,
                stats,
                random.Random(rng.getrandbits(64)),  # noqa: S311
                push=i < config.push_devices,
            )
            for i, ident in enumerate(identities)
        ]
        tasks = [asyncio.create_task(d.run(stop)) for d in devices]
        try:
            await until(stats)
        finally:
            stop.set()
            for device in devices:
                device.wake.ring(0.0)
            await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def repository_targets(targets_json: bytes) -> dict[str, TargetFile]:
    """The image repository's targets (``targets.json`` as published) by path."""
    from tuf.api.metadata import Metadata, Targets

    md = Metadata[Targets].from_bytes(targets_json)
    return dict(md.signed.targets)


def image_of(target: str, data: bytes, version: str, counter: int) -> Image:
    import hashlib

    return Image(target, version, hashlib.sha256(data).hexdigest(), counter)


def director_root_of(data: bytes) -> Root:
    from otaguard.repo.uptane import load_director_root

    return load_director_root(data)


__all__ = [
    "FleetConfig",
    "FleetStats",
    "Image",
    "LightDevice",
    "LightIdentity",
    "director_root_of",
    "image_of",
    "issue_identities",
    "repository_targets",
    "run_fleet",
]
