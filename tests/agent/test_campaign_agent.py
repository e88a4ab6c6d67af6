"""Campaigns on the device side (the campaign contract): events name the campaign, a halt's
``abandon`` and ``revert`` on the real device model, incompatible offers, health reports."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Mapping
from pathlib import Path

from helpers_fleet import HW, Fleet
from otaguard.agent.config import AgentConfig
from otaguard.agent.runner import Agent
from otaguard.agent.state import Result
from otaguard.device.model import Device
from otaguard.device.store import load_running, open_device

from .conftest import CONFIG, Car, Releases

UPDATE = ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]


def _events(fleet: Fleet, device_id: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in fleet.events if e["device"] == device_id]


def _counter(car: Car) -> int:
    with open_device(car.dir) as device:
        return device.otp.counters.value("main")


def test_events_carry_the_campaign_the_answer_named(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.offer(car.device_id, releases.v2_name, "camp-1", wave=2)
    assert car.cycle() is Result.UPDATED  # the trial check-in found no revert: confirmed
    events = _events(fleet, car.device_id)
    assert [e["kind"] for e in events] == UPDATE
    assert {e.get("campaign") for e in events} == {"camp-1"}
    assert car.running_version() == "2.0.0"


def test_without_a_campaign_events_name_none(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    assert all("campaign" not in e for e in _events(fleet, car.device_id))


class _HaltOnFirstChunk:
    """The halt lands while the first chunk arrives; the push rings the agent's wake."""

    def __init__(self, fleet: Fleet, device_id: str) -> None:
        self.fleet, self.device_id = fleet, device_id
        self.agent: Agent | None = None
        self.seen: list[str] = []

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        self.seen.append(event)

    def progress(self, target: str, done: int, total: int) -> None:
        if done and self.agent is not None and not self.agent.wake.is_set():
            self.fleet.halt(self.device_id, "abandon", None)
            self.agent.wake.ring(0.0)


def test_abandon_stops_the_download_deletes_it_and_installs_nothing(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    before = car.flash()
    fleet.offer(car.device_id, releases.v2_name, "camp-bad")
    observer = _HaltOnFirstChunk(fleet, car.device_id)
    with car.agent(observer=observer) as agent:
        observer.agent = agent
        assert agent.run_cycle() is Result.ABANDONED
        assert agent.state.inflight is None
    assert "recheck" in observer.seen and "abandon" in observer.seen
    assert [e["kind"] for e in _events(fleet, car.device_id)] == ["download-started", "abandoned"]
    abandoned = _events(fleet, car.device_id)[-1]
    assert (abandoned["campaign"], abandoned["target"]) == ("camp-bad", releases.v2_name)
    assert list((car.dir / "agent" / "downloads").iterdir()) == []  # partial data deleted
    assert car.flash() == before  # nothing installed
    assert car.cycle() is Result.UP_TO_DATE  # the director no longer lists it
    assert car.running_version() == "1.0.0"


def test_abandon_after_a_download_gave_up_in_an_earlier_cycle(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.offer(car.device_id, releases.v2_name, "camp-bad")
    fleet.targets_url = "http://127.0.0.1:9/targets/"  # nothing listens: every retry fails
    assert car.cycle() is Result.FAILED  # transient: retried with backoff, then given up
    fleet.halt(car.device_id, "abandon", None)
    assert car.cycle() is Result.ABANDONED  # the queued events go first, then the check-in
    events = _events(fleet, car.device_id)
    assert [e["kind"] for e in events] == ["download-started", "download-failed", "abandoned"]
    assert (events[1]["failure"], events[1]["campaign"]) == ("transient", "camp-bad")
    assert events[2]["campaign"] == "camp-bad"
    assert car.cycle() is Result.UP_TO_DATE


def test_abandon_for_another_campaign_or_after_install_is_ignored(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.offer(car.device_id, releases.v2_name, "camp-1")
    fleet.actions[car.device_id] = [{"kind": "abandon", "campaign": "camp-other"}]
    assert car.cycle() is Result.UPDATED
    fleet.actions[car.device_id] = [{"kind": "abandon", "campaign": "camp-1"}]
    assert car.cycle() is Result.UP_TO_DATE  # confirmed already: nothing to abandon
    assert car.running_version() == "2.0.0"
    assert "abandoned" not in fleet.kinds(car.device_id)


def test_revert_leaves_the_trial_for_the_confirmed_image(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.offer(car.device_id, releases.v2_name, "camp-bad")
    counter = _counter(car)

    def health(device: Device, running: object) -> bool:
        # the halt (with revert_on_halt) arrives while the new image runs on trial
        fleet.halt(car.device_id, "revert", releases.v1_name)
        return True

    assert car.cycle(health=health) is Result.REVERTED
    kinds = fleet.kinds(car.device_id)
    assert kinds == ["download-started", "downloaded", "installed", "boot-trial", "reverted"]
    reverted = _events(fleet, car.device_id)[-1]
    assert (reverted["check"], reverted["campaign"]) == ("halt", "camp-bad")
    running = load_running(car.dir)
    assert running is not None and not running.trial
    assert car.running_version() == "1.0.0"
    assert _counter(car) == counter  # the fuses never followed the trial
    assert car.cycle() is Result.UP_TO_DATE  # the director lists the previous target


def test_a_failed_trial_check_in_does_not_hold_the_trial(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    """The network is down during the trial: the device confirms (it cannot be held)."""
    car.cycle()
    fleet.offer(car.device_id, releases.v2_name, "camp-1")

    def health(device: Device, running: object) -> bool:
        fleet.server.close()  # the server goes away for good
        return True

    assert car.cycle(health=health) is Result.UPDATED  # its report waits in the outbox
    assert car.running_version() == "2.0.0"
    running = load_running(car.dir)
    assert running is not None and not running.trial


def test_an_offer_too_large_for_the_slot_is_incompatible_and_not_retried(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    big_name, _big = fleet.release("9.0.0", 9, random.Random(9).randbytes(80 * 1024))
    before = car.flash()
    fleet.offer(car.device_id, big_name, "camp-big")
    assert car.cycle() is Result.INCOMPATIBLE
    event = _events(fleet, car.device_id)[-1]
    assert event["kind"] == "incompatible"
    assert (event["failure"], event["check"], event["campaign"]) == (
        "deterministic",
        "slot-size",
        "camp-big",
    )
    assert not any("9.0.0" in p for p, _r in fleet.server.log)  # nothing downloaded
    assert car.cycle() is Result.UP_TO_DATE and fleet.requests[-1][2] == 304  # not retried
    assert car.flash() == before
    assert HW in big_name


def test_a_release_declared_for_other_versions_is_incompatible_and_never_downloaded(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    """The release managers signed 3.0.0 as replacing 2.0.0 only; the car runs 1.0.0. Offered
    it anyway (a server's mistake or a compromised one), the car refuses before downloading,
    reports ``incompatible`` and does not try again; a release declared for 1.0.0 installs."""
    car.cycle()
    name = fleet.publish(releases.v3_name, releases.v3, replaces=["2.0.0"])
    before = car.flash()
    fleet.offer(car.device_id, name, "camp-3")
    assert car.cycle() is Result.INCOMPATIBLE
    event = _events(fleet, car.device_id)[-1]
    assert (event["kind"], event["check"], event["campaign"]) == (
        "incompatible",
        "compatible-with",
        "camp-3",
    )
    assert "may replace 2.0.0, not 1.0.0" in event["detail"]
    assert not any("3.0.0" in p for p, _r in fleet.server.log)  # nothing downloaded
    assert car.cycle() is Result.UP_TO_DATE and fleet.requests[-1][2] == 304  # not retried
    assert car.flash() == before
    payload = random.Random(4).randbytes(4096)
    four = fleet.publish(f"{HW}/4.0.0.img", fleet.image("4.0.0", 4, payload), replaces=["1.0.0"])
    fleet.offer(car.device_id, four, "camp-4")
    assert car.cycle() is Result.UPDATED


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_health_reports_after_a_confirmed_update_then_as_control(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    clock = _Clock()
    config = AgentConfig(**{**CONFIG.__dict__, "health_window_s": 600.0})
    car.cycle(now=clock, config=config)
    assert fleet.health == []  # the first window has just begun
    clock.now += dt.timedelta(seconds=700)
    car.cycle(now=clock, config=config)
    control = fleet.health[-1]
    assert control["campaign"] is None and control["window_s"] == 700.0
    assert control["counts"] == {"resets": 1, "crashes": 0}  # the first power-on
    assert control["flags"] == {"heartbeat_lost": False}

    fleet.offer(car.device_id, releases.v2_name, "camp-1")
    assert car.cycle(now=clock, config=config) is Result.UPDATED
    count = len(fleet.health)
    clock.now += dt.timedelta(seconds=300)
    car.cycle(now=clock, config=config)
    assert len(fleet.health) == count  # the window is not over
    (car.dir / "running.json").unlink()  # a power cut: the next start boots the device
    clock.now += dt.timedelta(seconds=400)
    car.cycle(now=clock, config=config)
    updated = fleet.health[-1]
    assert updated["campaign"] == "camp-1" and updated["window_s"] == 700.0
    assert updated["counts"]["resets"] == 1
    clock.now += dt.timedelta(seconds=601)
    car.cycle(now=clock, config=config)
    assert fleet.health[-1]["campaign"] is None  # then control again


def test_a_server_without_the_health_endpoint_does_not_stop_check_ins(
    car: Car, fleet: Fleet, tmp_path: Path
) -> None:
    clock = _Clock()
    config = AgentConfig(**{**CONFIG.__dict__, "health_window_s": 1.0})
    car.cycle(now=clock, config=config)
    real = fleet._api

    def no_health(request, method, body):
        if request.path.endswith("/health"):
            return fleet._answer(request, 404, {"error": "not-found"})
        return real(request, method, body)

    fleet.server.api = no_health
    clock.now += dt.timedelta(seconds=5)
    assert car.cycle(now=clock, config=config) is Result.UP_TO_DATE
    state = json.loads((car.dir / "agent" / "state.json").read_bytes())
    assert state["health"]["since"] != clock.now.isoformat()  # still owed: sent later
