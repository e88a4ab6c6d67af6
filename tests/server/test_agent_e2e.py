"""The device agent against the real fleet server, over real HTTP, on SQLite and PostgreSQL.

Everything runs as its user runs it: ``otaguard server run`` in a process of its
own, ``otaguard fleet`` for the operator, ``otaguard repo`` for the release
managers, ``otaguard pki issue-device`` for the identity, ``otaguard agent run``
for the device. The device is enrolled, checks in, goes from 1.0.0 to 2.0.0 (a
full image) and from 2.0.0 to 3.0.0 (a delta), boots, confirms, and the server
shows it installed. Then: the server killed with SIGKILL and restarted while the
agent downloads (the agent completes), and the repository served through
Debian's nginx as an untrusted mirror.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import CliResult
from helpers_fleet import DeviceCa
from helpers_nginx import Nginx, free_port
from otaguard.agent.config import AgentConfig, Backoff, Failure
from otaguard.agent.runner import Agent
from otaguard.agent.state import Result
from otaguard.agent.store import load_identity
from otaguard.crypto.keys import public_key_pem
from otaguard.crypto.signer import KeySigner
from otaguard.delta.package import create as create_delta
from otaguard.device.bootloader import boot
from otaguard.device.geometry import PRESETS
from otaguard.device.install import confirm, install, running_of
from otaguard.device.model import MAIN, Component, DeviceConfig
from otaguard.device.store import init_device, open_device, parse_anchor, save_running
from server.helpers_process import ServerProcess
from server.helpers_release import HW, OfflineRepo

Cli = Callable[..., CliResult]
FAST = {
    "chunk_size": 16384,
    "read_timeout": 10.0,
    "backoff": {
        f: {"base": 0.2, "factor": 1.5, "cap": 2.0, "attempts": 12}
        for f in ("network", "server", "slow", "bad-response", "power")
    },
}


@pytest.fixture(scope="module")
def device_ca(tmp_path_factory: pytest.TempPathFactory) -> DeviceCa:
    return DeviceCa(tmp_path_factory.mktemp("device-ca"))


@dataclass
class World:
    srv: ServerProcess
    data: Path
    repo: OfflineRepo
    images: dict[str, bytes]
    tmp: Path
    cli: Cli

    def fleet(self, *args: object) -> CliResult:
        token = self.data / "admin.token"
        return self.cli("fleet", "--server", self.srv.url, "--token-file", token, *args)

    def publish(self) -> None:
        result = self.fleet("release", "publish", "--repo", self.repo.dir, "--json")
        assert result.code == 0, result.err

    def device_view(self, device_id: str) -> dict[str, Any]:
        shown = self.fleet("device", device_id, "--json")
        assert shown.code == 0, shown.err
        return json.loads(shown.out)  # type: ignore[no-any-return]


def _start(data: Path, db_url: str, *extra: str) -> ServerProcess:
    return ServerProcess.start(data, db_url, *extra)


def _world(srv: ServerProcess, data: Path, tmp: Path, cli: Cli, device_ca: DeviceCa) -> World:
    """Release managers sign 1.0.0 and 2.0.0, the operator uploads them and enrols the CA."""
    repo = OfflineRepo.init(tmp, data / "online-keys")
    rnd = random.Random(14)
    p1 = rnd.randbytes(48 * 1024)
    p2 = bytearray(p1)
    p2[5000:5200] = rnd.randbytes(200)
    images = {
        "v1": repo.add(f"{HW}/1.0.0.img", p1, version="1.0.0", counter=1).read_bytes(),
        "v2": repo.add(f"{HW}/2.0.0.img", bytes(p2), version="2.0.0", counter=2).read_bytes(),
    }
    repo.sign()
    world = World(srv, data, repo, images, tmp, cli)
    world.publish()
    (tmp / "devca.pem").write_bytes(device_ca.cert.read_bytes())
    enrolled = world.fleet(
        "enroll", "--ca", tmp / "devca.pem", "--hardware-id", HW, "--region", "eu"
    )
    assert enrolled.code == 0, enrolled.err
    return world


@pytest.fixture
def world(db_url: str, tmp_path: Path, cli: Cli, device_ca: DeviceCa) -> Iterator[World]:
    data = tmp_path / "srv"
    srv = _start(data, db_url, "--port", str(free_port()))
    w: World | None = None
    try:
        w = _world(srv, data, tmp_path, cli, device_ca)
        yield w
    finally:
        srv.stop()
        if w is not None and w.srv is not srv:  # restarted by the test
            w.srv.stop()


def _car(world: World, device_ca: DeviceCa, device_id: str, slot_size: int = 128 * 1024) -> Path:
    directory = world.tmp / device_id
    config = DeviceConfig(
        PRESETS["nor-4k"].with_slot_size(slot_size), (Component(MAIN, HW),), trial_tries=2
    )
    release = world.repo.keys.make("release")
    init_device(directory, config, [parse_anchor(public_key_pem(release.public_key()))])
    with open_device(directory) as device:  # the factory image, confirmed
        install(device, {MAIN: io.BytesIO(world.images["v1"])})
        confirm(device, running_of(boot(device)))
    device_ca.issue(device_id, world.tmp / f"{device_id}-id")
    provision = world.cli(
        "agent", "provision", "--device-dir", directory,
        "--repo-root", world.data / "repo" / "metadata" / "1.root.json",
        "--director-root", world.data / "director-root.json",
    )  # fmt: skip
    assert provision.code == 0, provision.err
    return directory


def _agent_run(world: World, directory: Path, device_id: str) -> subprocess.CompletedProcess[str]:
    config = world.tmp / "agent.json"
    config.write_text(json.dumps(FAST))
    return subprocess.run(
        [sys.executable, "-m", "otaguard.cli.main", "agent", "run", "--device-dir", str(directory),
         "--server", world.srv.url, "--identity", str(world.tmp / f"{device_id}-id"), "--once",
         "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def _events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return [line for line in lines if line["event"] == "event"]


def _running_version(directory: Path) -> tuple[str, str]:
    with open_device(directory) as device:
        result = boot(device)
        save_running(directory, running_of(result))
        assert result.main is not None
        return result.main.metadata.version, result.state


def test_enrol_check_in_full_update_then_delta(world: World, device_ca: DeviceCa) -> None:
    directory = _car(world, device_ca, "WVW0000001")
    first = _agent_run(world, directory, "WVW0000001")
    assert first.returncode == 0, first.stderr + first.stdout
    view = world.device_view("WVW0000001")
    assert view["ecus"][0]["version"] == "1.0.0"

    deployed = world.fleet("deploy", f"{HW}/2.0.0.img", "--device", "WVW0000001")
    assert deployed.code == 0, deployed.err
    full = _agent_run(world, directory, "WVW0000001")
    assert full.returncode == 0, full.stderr + full.stdout
    kinds = [e["kind"] for e in _events(full)]
    assert kinds == ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]
    assert _running_version(directory) == ("2.0.0", "confirmed")
    ecu = world.device_view("WVW0000001")["ecus"][0]
    assert (ecu["version"], ecu["boot"], ecu["target"]) == ("2.0.0", "confirmed", f"{HW}/2.0.0.img")

    p3 = bytearray(world.images["v2"][100:-200])
    p3[20000:20300] = random.Random(3).randbytes(300)
    v3 = world.repo.add(f"{HW}/3.0.0.img", bytes(p3), version="3.0.0", counter=3).read_bytes()
    delta = world.tmp / "2-3.delta"
    with open(delta, "wb") as out:
        create_delta(world.images["v2"], v3, out, [KeySigner(world.repo.keys.make("release"))])
    code = world.cli(
        "repo", "add-target", world.repo.dir, delta, "--name", f"{HW}/3.0.0-from-2.0.0.delta",
        "--trusted-key", world.repo.keys.pub("release"),
    ).code  # fmt: skip
    assert code == 0
    world.repo.sign("targets0")
    world.publish()
    assert world.fleet("deploy", f"{HW}/3.0.0.img", "--group", f"{HW}-eu").code == 0
    upgraded = _agent_run(world, directory, "WVW0000001")
    assert upgraded.returncode == 0, upgraded.stderr + upgraded.stdout
    targets = {e["target"] for e in _events(upgraded)}
    assert targets == {f"{HW}/3.0.0-from-2.0.0.delta"}  # the server named the delta
    assert _running_version(directory) == ("3.0.0", "confirmed")
    view = world.device_view("WVW0000001")
    assert (view["ecus"][0]["version"], view["ecus"][0]["boot"]) == ("3.0.0", "confirmed")
    for status in (200, 304):  # up to date: the new state's first answer, then 304 unchanged
        again = _agent_run(world, directory, "WVW0000001")
        assert again.returncode == 0 and _events(again) == []
        lines = [json.loads(line) for line in again.stdout.splitlines()]
        assert [x["status"] for x in lines if x["event"] == "check-in"] == [status]


class _KillOnce:
    """An observer that SIGKILLs the server once the download is under way, then restarts it."""

    def __init__(self, world: World, db_url: str, port: int) -> None:
        self.world, self.db_url, self.port = world, db_url, port
        self.killed_at: int | None = None
        self.failures: list[Mapping[str, object]] = []
        self.restarted = threading.Event()

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        if event == "failed":
            self.failures.append(fields)

    def progress(self, target: str, done: int, total: int) -> None:
        if self.killed_at is None and 0 < done < total // 4:
            self.killed_at = done
            os.kill(self.world.srv.pid, signal.SIGKILL)
            self.world.srv.proc.wait(30)
            threading.Thread(target=self._restart, daemon=True).start()

    def _restart(self) -> None:
        self.world.srv = _start(self.world.data, self.db_url, "--port", str(self.port))
        self.restarted.set()


def test_server_killed_and_restarted_mid_download(
    world: World, device_ca: DeviceCa, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(99)
    big = rnd.randbytes(1536 * 1024)
    image = world.repo.add(f"{HW}/4.0.0.img", big, version="4.0.0", counter=4).read_bytes()
    world.repo.sign("targets0")
    world.publish()
    directory = _car(world, device_ca, "WVW0000002", slot_size=2 * 1024 * 1024)
    identity = load_identity(world.tmp / "WVW0000002-id")
    port = int(world.srv.url.rsplit(":", 1)[1])
    config = AgentConfig(
        chunk_size=16384,
        backoff={
            f: Backoff(base=0.3, factor=1.5, cap=2.0, attempts=30) for f in Failure if f.transient
        },
    )
    with Agent(directory, world.srv.url, identity, config=config) as agent:
        assert agent.run_cycle() is Result.UP_TO_DATE  # enrolled
    assert world.fleet("deploy", f"{HW}/4.0.0.img", "--device", "WVW0000002").code == 0
    from otaguard.agent.chunks import ChunkStore

    stored: list[int] = []
    real_put = ChunkStore.put

    def put(self: ChunkStore, index: int, data: bytes) -> None:
        stored.append(index)
        real_put(self, index, data)

    monkeypatch.setattr(ChunkStore, "put", put)
    killer = _KillOnce(world, db_url, port)
    slow = _Slow(killer)
    with Agent(directory, world.srv.url, identity, config=config, observer=slow) as agent:
        result = agent.run_cycle()
    assert killer.killed_at is not None and killer.restarted.is_set()
    assert result is Result.UPDATED, killer.failures
    assert killer.failures, "the download must have failed while the server was down"
    assert sorted(stored) == list(range(-(-len(image) // 16384)))  # each chunk stored once
    with open_device(directory) as device:
        booted = boot(device)
        assert booted.main is not None and booted.main.metadata.version == "4.0.0"
        region = device.config.layout.slot(booted.slot or "a", MAIN)
        assert device.flash.read(region.offset, len(image)) == image


class _Slow:
    """Reads slowly (a slow link), so the server is killed with most of the image unsent."""

    def __init__(self, inner: _KillOnce) -> None:
        self.inner = inner

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        self.inner.log(event, fields)

    def progress(self, target: str, done: int, total: int) -> None:
        self.inner.progress(target, done, total)
        if self.inner.killed_at is None:
            threading.Event().wait(0.02)


def test_repository_through_nginx_as_an_untrusted_mirror(
    db_url: str, tmp_path: Path, cli: Cli, device_ca: DeviceCa
) -> None:
    """The server names nginx (serving its repository directory) as where devices fetch."""
    data = tmp_path / "srv"
    first = _start(data, db_url)  # initialise, to learn where the repository lives
    first.terminate()
    mirror = Nginx(data / "repo", tmp_path / "nginx")
    srv = _start(data, db_url, "--repo-url", mirror.url)
    try:
        world = _world(srv, data, tmp_path, cli, device_ca)
        directory = _car(world, device_ca, "WVW0000003")
        assert _agent_run(world, directory, "WVW0000003").returncode == 0
        assert world.fleet("deploy", f"{HW}/2.0.0.img", "--device", "WVW0000003").code == 0
        run = _agent_run(world, directory, "WVW0000003")
        assert run.returncode == 0, run.stderr + run.stdout
        assert _running_version(directory) == ("2.0.0", "confirmed")
        fetched = [(uri, status) for _m, uri, status, _r in mirror.requests()]
        assert any(uri.endswith("2.0.0.img") and status == 206 for uri, status in fetched)
        assert any(uri.endswith("timestamp.json") for uri, _s in fetched)
    finally:
        srv.stop()
        mirror.stop()


HOLD_POLICY = """
[waves]
fractions = [1.0]
min_devices = 1
min_soak_s = 3600.0

[advance]
min_confirmed = 1000
require_health = false

[halt]
failure_threshold = 0.5
min_sample = 1000
deadline_s = 3600.0
revert_on_halt = true
"""


class _HaltInTrial:
    """Halts the campaign (the operator's kill switch) when the device reports its trial boot."""

    def __init__(self, halt: Callable[[], CliResult]) -> None:
        self.halt = halt
        self.kinds: list[str] = []
        self.halted: CliResult | None = None

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        if event == "event":
            self.kinds.append(str(fields["kind"]))
            if fields["kind"] == "boot-trial" and self.halted is None:
                self.halted = self.halt()

    def progress(self, target: str, done: int, total: int) -> None:
        pass


def test_campaign_offers_to_the_real_agent_and_its_halt_reverts_a_trial(
    world: World, device_ca: DeviceCa
) -> None:
    """The whole campaign path with the real agent and device model: a campaign created by one
    person and started by another reaches a car (its events name the campaign); the kill
    switch pulled while a second car runs the release on trial makes that car revert."""
    cars = {vin: _car(world, device_ca, vin) for vin in ("WVW0000003", "WVW0000004")}
    for vin, directory in cars.items():
        assert _agent_run(world, directory, vin).returncode == 0  # enrolled, at 1.0.0
    made = world.fleet("token", "create", "--role", "operator", "--name", "olga", "--json")
    operator = world.tmp / "olga.token"
    operator.write_text(json.loads(made.out)["token"])

    def ops(*args: object) -> CliResult:
        return world.cli("fleet", "--server", world.srv.url, "--token-file", operator,
                         "campaign", *args)  # fmt: skip

    policy = world.tmp / "hold.toml"
    policy.write_text(HOLD_POLICY)
    created = world.fleet("campaign", "create", f"{HW}/2.0.0.img", "--name", "v2",
                          "--hardware-id", HW, "--compatible", f"{HW}=1.0.0",
                          "--policy", policy, "--json")  # fmt: skip
    assert created.code == 0, created.err
    cid = json.loads(created.out)["id"]
    assert world.fleet("campaign", "approve", cid).code == 1  # the creator cannot approve
    assert ops("approve", cid).code == 0 and ops("start", cid).code == 0

    first = _agent_run(world, cars["WVW0000003"], "WVW0000003")
    assert first.returncode == 0, first.stderr + first.stdout
    events = _events(first)
    assert [e["kind"] for e in events] == ["download-started", "downloaded", "installed",
                                           "boot-trial", "confirmed"]  # fmt: skip
    assert {e["campaign"] for e in events} == {cid}
    assert _running_version(cars["WVW0000003"]) == ("2.0.0", "confirmed")

    halter = _HaltInTrial(lambda: ops("halt", cid, "--reason", "field reports"))
    identity = load_identity(world.tmp / "WVW0000004-id")
    with Agent(cars["WVW0000004"], world.srv.url, identity, observer=halter) as agent:
        result = agent.run_cycle()
    assert halter.halted is not None and halter.halted.code == 0, halter.halted
    assert result is Result.REVERTED, halter.kinds
    assert halter.kinds[-2:] == ["boot-trial", "reverted"]
    assert _running_version(cars["WVW0000004"]) == ("1.0.0", "confirmed")

    shown = ops("status", cid, "--json")
    status = json.loads(shown.out)
    assert status["status"] == "halted" and "field reports" in status["end_reason"]
    wave = status["waves"][0]
    assert (wave["confirmed"], wave["reverted"]) == (1, 1), wave
    assert world.device_view("WVW0000004")["ecus"][0]["version"] == "1.0.0"
