"""The agent's world: a device CA, a fleet (repository, director, stand-in server), devices."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers_fleet import HW, DeviceCa, Fleet
from otaguard.agent.config import AgentConfig, Backoff, Failure
from otaguard.agent.runner import Agent
from otaguard.agent.store import load_identity, provision
from otaguard.crypto.keys import public_key_pem
from otaguard.device.bootloader import boot
from otaguard.device.geometry import PRESETS
from otaguard.device.install import confirm, install, running_of
from otaguard.device.model import MAIN, Component, DeviceConfig
from otaguard.device.store import init_device, open_device, parse_anchor

PAYLOAD = 24 * 1024
FAST = {f: Backoff(base=0.0, jitter=0.0, attempts=6) for f in Failure if f.transient}
CONFIG = AgentConfig(chunk_size=4096, read_timeout=5.0, rate_grace=5.0, backoff=FAST)


@pytest.fixture(scope="session")
def device_ca(tmp_path_factory: pytest.TempPathFactory) -> DeviceCa:
    return DeviceCa(tmp_path_factory.mktemp("device-ca"))


@dataclass
class Releases:
    v1: bytes
    v2: bytes
    v3: bytes
    v1_name: str
    v2_name: str
    v3_name: str


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "fleet")
    yield f
    f.close()


@pytest.fixture
def releases(fleet: Fleet) -> Releases:
    rnd = random.Random(14)
    p1 = rnd.randbytes(PAYLOAD)
    p2 = bytearray(p1)
    p2[1000:1100] = rnd.randbytes(100)
    p3 = bytearray(p2)
    p3[9000:9300] = rnd.randbytes(300)
    v1_name, v1 = fleet.release("1.0.0", 1, p1)
    v2_name, v2 = fleet.release("2.0.0", 2, bytes(p2))
    v3 = fleet.image("3.0.0", 3, bytes(p3))
    v3_name = f"{HW}/3.0.0.img"
    return Releases(v1, v2, v3, v1_name, v2_name, v3_name)


@dataclass
class Car:
    """A device directory with its identity, running ``factory`` confirmed, provisioned."""

    fleet: Fleet
    dir: Path
    identity_dir: Path
    device_id: str

    def agent(self, **kwargs: Any) -> Agent:
        kwargs.setdefault("config", CONFIG)
        kwargs.setdefault("sleep", lambda _s: None)
        return Agent(self.dir, self.fleet.url, load_identity(self.identity_dir), **kwargs)

    def cycle(self, **kwargs: Any) -> Any:
        with self.agent(**kwargs) as agent:
            return agent.run_cycle()

    def running_version(self) -> str:

        with open_device(self.dir) as device:
            result = boot(device)
            running = running_of(result)
        from otaguard.device.store import save_running

        save_running(self.dir, running)
        assert result.main is not None
        return result.main.metadata.version

    def refusal(self) -> str:
        """The check named by this device's last refusal (from the agent's own state)."""
        from otaguard.agent.store import AgentDir

        state, _ = AgentDir(self.dir).load_state()
        sent = [
            e for e in self.fleet.events if e["kind"] == "refused" and e["device"] == self.device_id
        ]
        queued = [r.to_json() for r in state.outbox if r.kind == "refused"]
        return str((sent + queued)[-1]["check"]) if sent + queued else "?"

    def flash(self) -> bytes:
        with open_device(self.dir) as device:
            return device.flash.snapshot()


def make_car(
    fleet: Fleet,
    ca: DeviceCa,
    base: Path,
    device_id: str,
    factory: bytes,
    *,
    key: str | None = None,
) -> Car:
    directory = base / device_id
    base.mkdir(parents=True, exist_ok=True)
    config = DeviceConfig(
        PRESETS["nor-4k"].with_slot_size(64 * 1024), (Component(MAIN, HW),), trial_tries=2
    )
    anchor = parse_anchor(public_key_pem(fleet.release_key.public_key()))
    init_device(directory, config, [anchor])
    with open_device(directory) as device:  # the factory image, confirmed
        install(device, {MAIN: io.BytesIO(factory)})
        confirm(device, running_of(boot(device)))
    provision(directory, fleet.repo_root, fleet.director_root)
    identity = ca.issue(device_id, base / f"{device_id}-id", key)
    return Car(fleet, directory, identity, device_id)


@pytest.fixture
def car(fleet: Fleet, device_ca: DeviceCa, releases: Releases, tmp_path: Path) -> Car:
    return make_car(fleet, device_ca, tmp_path, "VIN0001", releases.v1)
