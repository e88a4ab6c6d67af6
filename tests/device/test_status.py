"""The status model (``device/status.py``): one value per device state, and its wire form."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from otaguard.device.bootloader import boot
from otaguard.device.install import confirm, install, running_of
from otaguard.device.model import MAIN, Component
from otaguard.device.status import CounterStatus, ImageStatus, confirm_report, device_status
from otaguard.device.update_set import FwuState

from .conftest import HW, Kit, init_device_dir


def test_status_follows_the_update_story(kit: Kit) -> None:
    device = kit.device()
    fresh = device_status(device, None)
    assert fresh.fwu_state is FwuState.FAILED and not fresh.pending
    assert all(image is None for slot in fresh.slots.values() for image in slot.components.values())
    assert fresh.counters == {MAIN: CounterStatus(0, 64, "fuses")}
    assert fresh.installed() == {MAIN: None}

    install(device, kit.files(kit.image(1)))
    staged = device_status(device, None)
    assert staged.fwu_state is FwuState.STAGED and staged.pending
    assert staged.slots["a"].label == "trial" and staged.slots["a"].state.tries == 3
    image = staged.slots["a"].components[MAIN]
    assert image is not None and (image.verified, image.version, image.security_counter) == (
        True,
        "1.0.0",
        1,
    )

    running = running_of(boot(device))
    trial = device_status(device, running)
    assert trial.fwu_state is FwuState.TRIAL and trial.running == running
    assert trial.installed()[MAIN] == image  # what runs, read from the running slot

    confirm(device, running)
    ready = device_status(device, running)
    assert ready.fwu_state is FwuState.READY and not ready.pending
    assert ready.counters[MAIN].counter == 1 and ready.counters[MAIN].left == 63
    assert ready.slots["a"].label == "confirmed" and ready.slots["b"].label == "unbootable"


def test_an_image_that_fails_verification_reports_only_the_check(kit: Kit) -> None:
    device = kit.device()
    install(device, kit.files(kit.image(2)))
    running = running_of(boot(device))
    confirm(device, running)
    # An older, validly signed image written straight into slot b: below the fuses.
    from otaguard.device.attack import flash_raw

    old = kit.image(1)
    flash_raw(device, "b", MAIN, io.BytesIO(old), len(old))
    status = device_status(device, running)
    assert status.slots["b"].components[MAIN] == ImageStatus(False, check="security-counter")
    assert status.slots["b"].to_json()["components"][MAIN] == {
        "verified": False,
        "check": "security-counter",
    }


def test_status_reads_only(kit: Kit) -> None:
    device = kit.device()
    install(device, kit.files(kit.image(1)))
    before = device.snapshot()
    device.arm()
    device_status(device, None)
    assert device.clock.count == 0 and device.snapshot() == before


def test_wire_form_known_answer(kit: Kit) -> None:
    """The JSON the CLI prints and the fleet agent will send, spelled out once."""
    device = kit.device(
        components=(Component(MAIN, HW), Component("radio", "acme-radio")),
        counter_backend="rpmb",
    )
    status = device_status(device, None)
    geometry = device.config.geometry.to_json()
    empty_slot = {
        "state": "unbootable",
        "priority": 0,
        "tries_remaining": 0,
        "successful": False,
        "unbootable": True,
        "components": {"main": None, "radio": None},
    }
    rpmb = {"counter": 0, "capacity": 0xFFFFFFFF, "left": 0xFFFFFFFF, "backend": "rpmb"}
    assert status.to_json() == {
        "geometry": geometry,
        "fwu_state": "FAILED",
        "pending": False,
        "running": None,
        "metadata": {"sequence": 1, "valid_copies": 1},
        "slots": {"a": empty_slot, "b": empty_slot},
        "fuses": {"main": rpmb, "radio": rpmb},
        "fuse_counter": 0,
        "fuses_left": 0xFFFFFFFF,
        "strict_counter": False,
    }


def test_running_set_in_the_wire_form(kit: Kit) -> None:
    device = kit.device()
    running = kit.updated(device, 1)
    wire = device_status(device, running).to_json()
    image = device_status(device, running).installed()[MAIN]
    assert image is not None
    assert wire["running"] == {"slot": "a", "trial": False, "image_ids": [image.image_id]}
    assert wire["slots"]["a"]["components"]["main"] == {
        "verified": True,
        "version": "1.0.0",
        "security_counter": 1,
        "image_id": image.image_id,
    }
    assert (wire["fwu_state"], wire["pending"], wire["fuse_counter"]) == ("READY", False, 1)
    json.dumps(wire)  # plain JSON types only


def test_status_values_are_frozen(kit: Kit) -> None:
    status = device_status(kit.device(), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.fwu_state = FwuState.READY  # type: ignore[misc]


def test_cli_prints_the_model(cli, tmp_path: Path, files) -> None:
    from otaguard.device.store import load_running, open_device

    dev = init_device_dir(cli, tmp_path / "dev", files)
    for step in (("install", files["v1"]), ("boot",)):
        assert cli("device", step[0], dev, *step[1:]).code == 0
    printed = cli("device", "status", dev, "--json").out
    with open_device(dev, writable=False) as device:
        model = device_status(device, load_running(dev))
    assert printed == json.dumps(model.to_json(), indent=2, sort_keys=True) + "\n"


def test_confirm_report_names_the_slot_version_and_the_raised_fuses(kit: Kit) -> None:
    device = kit.device()
    install(device, kit.files(kit.image(2)))
    running = running_of(boot(device))
    first = confirm_report(device, confirm(device, running))
    assert first == {
        "power_cut": False,
        "slot": running.slot if running else None,
        "version": "2.0.0",
        "already_confirmed": False,
        "fuses": {MAIN: {"counter": 2, "left": 62}},
        "flash_ops": first["flash_ops"],
    }
    assert first["flash_ops"] > 0
    again = confirm_report(device, confirm(device, running))
    assert again["already_confirmed"] is True and again["fuses"] == first["fuses"]
