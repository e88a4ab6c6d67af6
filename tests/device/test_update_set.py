"""Multi-component update sets: installed, accepted or rejected as one (PSA FWU states)."""

from __future__ import annotations

import io

import pytest

from otaguard.device.bootloader import boot
from otaguard.device.faults import FaultPlan, PowerLoss
from otaguard.device.install import confirm, running_of
from otaguard.device.model import MAIN, Component
from otaguard.device.update_set import FwuState, UpdateSet, fwu_state
from otaguard.errors import HardwareIdError, SecurityCounterError, UsageError

RADIO_HW = "acme-radio-v1"
COMPONENTS = (Component(MAIN, "acme-ecu-v2"), Component("radio", RADIO_HW))


def _set(kit, app: int, radio: int | None, *, radio_hw: str = RADIO_HW) -> UpdateSet:
    images = {MAIN: io.BytesIO(kit.image(app))}
    if radio is not None:
        images["radio"] = io.BytesIO(kit.image(radio, hardware_ids=(radio_hw,)))
    return UpdateSet(images)


def _state(device, running) -> FwuState:
    return fwu_state(device.bootctl.load(), device.config.trial_tries, running)


def test_set_goes_through_psa_states_and_is_accepted_as_one(kit) -> None:
    device = kit.device(components=COMPONENTS)
    assert _state(device, None) is FwuState.FAILED  # nothing installed yet
    _set(kit, 1, 1).install(device)
    assert _state(device, None) is FwuState.STAGED
    running = running_of(boot(device))
    assert _state(device, running) is FwuState.TRIAL
    confirm(device, running)
    counters = device.otp.counters
    assert (counters.value(MAIN), counters.value("radio")) == (1, 1)
    running = running_of(boot(device))
    assert _state(device, running) is FwuState.READY
    # Update both; then let the trial lapse: both revert together.
    _set(kit, 2, 3).install(device, running=running)
    results = [boot(device) for _ in range(device.config.trial_tries + 1)]
    assert [r.slot for r in results] == ["b"] * device.config.trial_tries + ["a"]
    assert {i.component: i.metadata.version for i in results[-1].images} == {
        MAIN: "1.0.0",
        "radio": "1.0.0",
    }
    assert (counters.value(MAIN), counters.value("radio")) == (1, 1)


def test_one_bad_component_rejects_the_whole_set_before_writing(kit) -> None:
    device = kit.device(components=COMPONENTS)
    _set(kit, 1, 2).install(device)
    running = running_of(boot(device))
    confirm(device, running)
    before = device.snapshot()
    device.arm()
    with pytest.raises(HardwareIdError):  # a radio image built for the wrong part
        _set(kit, 2, 3, radio_hw="acme-ecu-v2").install(device, running=running)
    with pytest.raises(SecurityCounterError):  # a good app with a rolled-back radio
        _set(kit, 2, 1).install(device, running=running)
    assert device.clock.count == 0 and device.snapshot() == before
    with pytest.raises(UsageError, match="no component"):
        UpdateSet({"gps": io.BytesIO(kit.image(2))}).install(device, running=running)


def test_a_component_that_fails_at_boot_fails_the_whole_slot(kit) -> None:
    device = kit.device(components=COMPONENTS)
    _set(kit, 1, 1).install(device)
    running = running_of(boot(device))
    confirm(device, running)
    running = running_of(boot(device))
    _set(kit, 2, 2).install(device, running=running)
    radio_b = device.config.layout.slot("b", "radio")
    device.flash.erase_sector(radio_b.offset // device.config.geometry.sector_size)
    result = boot(device)
    assert result.slot == "a" and result.rejected[0][0] == "b"
    assert {i.component: i.metadata.version for i in result.images} == {
        MAIN: "1.0.0",
        "radio": "1.0.0",
    }


def test_partial_set_carries_the_other_components_over(kit) -> None:
    device = kit.device(components=COMPONENTS)
    with pytest.raises(UsageError, match="carry over"):
        _set(kit, 1, None).install(device)
    _set(kit, 1, 2).install(device)
    running = running_of(boot(device))
    confirm(device, running)
    running = running_of(boot(device))
    _set(kit, 3, None).install(device, running=running)
    result = boot(device)
    assert {i.component: i.metadata.version for i in result.images} == {
        MAIN: "3.0.0",
        "radio": "2.0.0",
    }


def test_power_cut_anywhere_in_a_set_install_keeps_the_old_set(kit) -> None:
    device = kit.device(components=COMPONENTS)
    _set(kit, 1, 1).install(device)
    confirm(device, running_of(boot(device)))
    running = running_of(boot(device))
    base = device.snapshot()
    device.arm()
    total = _set(kit, 2, 2).install(device, running=running).flash_ops
    for op in range(total):
        device.restore(base)
        device.arm(FaultPlan(cut_before=op))
        with pytest.raises(PowerLoss):
            _set(kit, 2, 2).install(device, running=running)
        device.arm()
        result = boot(device)
        versions = {i.metadata.version for i in result.images}
        assert versions in ({"1.0.0"}, {"2.0.0"}), op  # never a mix of old and new
        assert (result.state == "trial") == (versions == {"2.0.0"})
