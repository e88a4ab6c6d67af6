"""200 lightweight agents over real HTTP against the real server: a bad release halted in its
first wave (exposure at most that wave), then a good one completed; a halt pushed over the
real Mosquitto reaches subscribed agents, which check in at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from helpers_fleet import DeviceCa
from helpers_mqtt import ensure_mosquitto
from otaguard.sim import http_fleet as hf
from server.helpers_campaign import CampaignWorld, start_world

DEVICES = 200


@pytest.fixture(scope="module")
def device_ca(tmp_path_factory: pytest.TempPathFactory) -> DeviceCa:
    return DeviceCa(tmp_path_factory.mktemp("device-ca"))


@pytest.fixture
def world(db_url: str, tmp_path: Path, cli: Any, device_ca: DeviceCa) -> Any:
    broker = ensure_mosquitto()
    w = start_world(tmp_path, db_url, device_ca, cli, "--mqtt", broker)
    try:
        yield w
    finally:
        w.srv.stop()


def test_bad_release_halted_in_its_first_wave_then_good_completes(world: CampaignWorld) -> None:
    config = world.fleet_config(
        failure_rate={world.bad: 0.5, world.good: 0.0},
        poll_s=1.0,
        download_s=0.3,
        trial_s=0.3,
        health_window_s=1.0,
        push_devices=DEVICES,
        seed=16,
    )
    identities = world.identities("LT", DEVICES)
    seen: dict[str, Any] = {}

    async def scenario(stats: hf.FleetStats) -> None:
        while stats.requests["/state"] < DEVICES:  # every device enrolled and reported
            await asyncio.sleep(0.2)
        bad = await world.launch(world.bad)
        shown = await world.until_status(bad, {"halted"}, timeout=120)
        seen["halted_at"] = time.monotonic()
        seen["bad"] = shown
        await asyncio.sleep(3 * config.poll_s)  # in-flight devices abandon or revert
        seen["bad_started"] = len(stats.started_by.get(world.bad, set()))
        good = await world.launch(world.good)
        seen["good"] = await world.until_status(good, {"completed", "halted"}, timeout=240)
        # a device still in flight when the evaluator completed the campaign (in-flight
        # devices count as failures, and the bound can pass with one) finishes afterwards
        deadline = time.monotonic() + 20 * config.poll_s
        while stats.count(world.good, "confirmed") < DEVICES and time.monotonic() < deadline:
            await asyncio.sleep(config.poll_s)

    stats = asyncio.run(hf.run_fleet(config, identities, scenario))

    bad = seen["bad"]
    assert bad["status"] == "halted" and bad["wave"] == 0, bad
    first_wave = bad["waves"][0]["total"]  # the first wave's cohort (keyed hash, near the plan)
    assert all(w["total"] == 0 for w in bad["waves"][1:])  # nobody outside it was offered it
    assert 0 < seen["bad_started"] <= first_wave
    exposed = sum(stats.count(world.bad, k) for k in ("confirmed", "reverted", "reverted-told"))
    assert exposed <= first_wave
    assert stats.count(world.bad, "reverted") > 0  # the failures the evaluator saw

    good = seen["good"]
    assert good["status"] == "completed", good
    # the last wave soaks longer than a poll: every device has been offered it and confirmed
    assert stats.count(world.good, "confirmed") == len(stats.started_by[world.good]) == DEVICES
    assert stats.count(world.good, "reverted") == 0
    assert stats.health_reports > 0
    # no transport error: the server keeps an idle connection longer than the client's pool
    # does (Timing.keep_alive), so no poll goes out on a connection the server is closing
    assert not stats.errors, stats.errors
    # the halt went out over MQTT (spread 0) and woke subscribed devices
    halted = [t for t, spread in stats.pushed_checkins if spread == 0.0]
    assert halted, "no device checked in because of the pushed halt"


@pytest.mark.parametrize(
    ("option", "value"),
    [("--factory", "no-equals-sign"), ("--fail", "acme/2.img=lots")],
)
def test_fleet_agents_refuses_malformed_options_in_one_line(
    cli: Any, tmp_path: Path, option: str, value: str
) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"")
    args = {"--factory": f"acme/1.img={image}", "--fail": "acme/2.img=0.5"}
    args[option] = value
    result = cli(
        "fleet-agents", "--server", "http://127.0.0.1:9", "--device-ca", tmp_path,
        "--count", "1", "--hardware-id", "hw", "--director-root", image,
        "--repo-metadata", tmp_path, *[a for k, v in args.items() for a in (k, v)],
    )  # fmt: skip
    assert result.code == 2
    assert result.err.count("\n") == 1 and option in result.err
