"""Kills and power cuts at every step of an update: the agent resumes and ends with the image.

A *kill* stops the agent between an action and the write of the state it
leads to (the worst moment: the action's effects happened, the state does not
say so); RAM survives (``running.json``). A *power cut* is the same, plus RAM
is lost: the next start boots the device first. Power cuts inside flash
operations come from the device model's fault plans.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from helpers_fleet import DeviceCa, Fleet
from otaguard.agent.state import Result
from otaguard.agent.store import AgentDir
from otaguard.device.faults import FaultPlan, PowerLoss
from otaguard.device.store import save_running

from .conftest import Car, Releases, make_car

UPDATE = ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]


class Crash(BaseException):
    """The process dies here (not an Exception: nothing in the agent may catch it)."""


def _saves_in_an_update(fleet: Fleet, device_ca: DeviceCa, releases: Releases, base: Path) -> int:
    car = make_car(fleet, device_ca, base, "COUNT", releases.v1)
    car.cycle()
    fleet.assign("COUNT", releases.v2_name)
    count = 0
    real = AgentDir.save_state

    def counting(self: AgentDir, state: object) -> None:
        nonlocal count
        count += 1
        real(self, state)  # type: ignore[arg-type]

    AgentDir.save_state = counting  # type: ignore[method-assign]
    try:
        assert car.cycle() is Result.UPDATED
    finally:
        AgentDir.save_state = real  # type: ignore[method-assign]
    return count


@pytest.mark.parametrize("power", [False, True], ids=["kill", "power-cut"])
def test_a_crash_before_every_state_write_resumes(
    fleet: Fleet,
    device_ca: DeviceCa,
    releases: Releases,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    power: bool,
) -> None:
    saves = _saves_in_an_update(fleet, device_ca, releases, tmp_path / "count")
    assert saves >= 8
    real = AgentDir.save_state
    for crash_at in range(saves):
        device_id = f"VIN{crash_at:04d}"
        car = make_car(fleet, device_ca, tmp_path, device_id, releases.v1)
        car.cycle()
        fleet.assign(device_id, releases.v2_name)
        calls = 0

        def crashing(self: AgentDir, state: object, crash_at: int = crash_at) -> None:
            nonlocal calls
            calls += 1
            if calls == crash_at + 1:
                raise Crash()
            real(self, state)  # type: ignore[arg-type]

        monkeypatch.setattr(AgentDir, "save_state", crashing)
        with pytest.raises(Crash):
            car.cycle()
        monkeypatch.setattr(AgentDir, "save_state", real)
        if power:
            save_running(car.dir, None)
        for _ in range(2):  # a crash before the final report may end the first cycle early
            result = car.cycle()
            if result is Result.UPDATED:
                break
        assert car.running_version() == "2.0.0", crash_at
        kinds = [e["kind"] for e in fleet.events if e["target"] == releases.v2_name]
        assert "confirmed" in kinds and "reverted" not in kinds, (crash_at, kinds)
        fleet.events.clear()
        assert car.cycle() is Result.UP_TO_DATE


def _cut_until_done(car: Car, action: str, seed: int, old: str) -> int:
    """Cut power at a random early operation of ``action`` until it gets through; the cuts."""
    rng = random.Random(seed)
    cuts = 0
    for _ in range(12):
        try:
            result = car.cycle(faults={action: FaultPlan(cut_before=rng.randrange(15))})
        except PowerLoss:
            cuts += 1
            assert car.running_version() == old  # power back: the old image boots
            continue
        assert result is Result.UPDATED
        return cuts
    assert car.cycle() is Result.UPDATED
    return cuts


def test_power_cut_at_random_flash_operations_of_the_install(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert _cut_until_done(car, "install", 3, "1.0.0") >= 2
    assert car.running_version() == "2.0.0"
    assert fleet.kinds().count("confirmed") == 1


@pytest.mark.parametrize("cut", range(4))
@pytest.mark.parametrize("action", ["boot", "confirm"])
def test_power_cut_during_reboot_or_confirm(
    car: Car, fleet: Fleet, releases: Releases, action: str, cut: int
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    try:
        result = car.cycle(faults={action: FaultPlan(cut_before=cut)})
    except PowerLoss:
        result = car.cycle()
    assert result is Result.UPDATED
    assert car.running_version() == "2.0.0"
    assert fleet.kinds().count("confirmed") == 1


def test_failed_health_check_reverts_and_is_not_retried(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle(health=lambda device, running: False) is Result.REVERTED
    assert car.running_version() == "1.0.0"
    reverted = [e for e in fleet.events if e["kind"] == "reverted"]
    assert reverted and reverted[0]["check"] == "health-check"
    assert fleet.devices[car.device_id].state["ecus"][0]["version"] == "1.0.0"
    assert car.cycle() is Result.UP_TO_DATE  # the same offer again: not retried


def test_power_cut_during_a_delta_install(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    fleet.publish(releases.v3_name, releases.v3)
    fleet.release_delta(releases.v2, releases.v3, releases.v3_name, chunk_size=8192)
    fleet.assign(car.device_id, releases.v3_name)
    assert _cut_until_done(car, "install", 5, "2.0.0") >= 2
    assert car.running_version() == "3.0.0"


def test_power_cut_during_download_then_torn_storage(
    car: Car, fleet: Fleet, releases: Releases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power fails after 3 chunks and a journaled chunk is torn on storage: it is fetched again."""
    from otaguard.agent.chunks import ChunkStore

    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    real_put = ChunkStore.put
    puts = 0

    def put(self: ChunkStore, index: int, data: bytes) -> None:
        nonlocal puts
        puts += 1
        if puts == 4:
            raise Crash()  # the power fails before chunk 3 is stored
        real_put(self, index, data)

    monkeypatch.setattr(ChunkStore, "put", put)
    with pytest.raises(Crash):
        car.cycle()
    monkeypatch.setattr(ChunkStore, "put", real_put)
    save_running(car.dir, None)  # RAM is gone
    data = next((car.dir / "agent" / "downloads").glob("*/data"))
    with open(data, "r+b") as handle:  # a torn sector in chunk 2, which was journaled
        handle.seek(2 * 4096 + 1000)
        handle.write(b"\xff" * 512)
    assert car.cycle() is Result.UPDATED
    assert car.running_version() == "2.0.0"
    info = fleet.target_info(releases.v2_name)
    served = f"/targets/acme-ecu-v2/{info.hashes['sha256']}.2.0.0.img"
    starts = [int(r.split("=")[1].split("-")[0]) for r in fleet.server.ranges(served) if r]
    assert starts == [0, 2 * 4096]  # chunks 0 and 1 kept; 2 (torn) and the rest fetched
