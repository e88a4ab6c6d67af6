"""The exhaustive power-loss campaign (issue 3's acceptance test).

For a v1 -> v2 update that is confirmed, and a v2 -> v3 update that crash-
loops and reverts, on 8 geometries x both erased values: cut power before
every flash operation, and tear every operation (rest left old, or noise),
then reboot until the device settles. ``run_campaign`` checks after each
fault that the device always boots a verified image (old or new, never a
mix), that the fuses never decrease and are never ahead of the confirmed
image, that a trial never becomes permanent without confirm, and that the
update still succeeds afterwards. Bricks must be 0.

The last tests break the design on purpose (fuses before the record in
confirm; Android's single copy reset to defaults) to show the campaign
notices.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from otaguard.device import bootctl, bootloader, campaign
from otaguard.device.faults import FaultPlan, PowerLoss, TearFill
from otaguard.device.geometry import PRESETS
from otaguard.device.install import _running_set
from otaguard.device.slots import image_id_of

GEOMETRIES = sorted(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["update", "crash-loop"])
@pytest.mark.parametrize("erased", [0xFF, 0x00], ids=["ff", "00"])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_power_loss_anywhere_never_bricks(kit, name: str, erased: int, scenario: str) -> None:
    geometry = PRESETS[name].with_erased(erased)
    history = [kit.image(1)] if scenario == "update" else [kit.image(1), kit.image(2)]
    new = kit.image(2) if scenario == "update" else kit.image(3)
    report = campaign.run_campaign(kit.factory(geometry), history, new, scenario=scenario)
    print(
        f"{scenario} on {name}/0x{erased:02x}: {report.operations} operations, "
        f"{report.fault_points} fault points tried, {report.bricks} bricks"
    )
    assert report.operations > 10
    assert report.fault_points == 3 * report.operations
    assert report.bricks == 0, report.failures


def test_campaign_is_deterministic(kit) -> None:
    make = kit.factory(PRESETS["stm32h7"])
    first = campaign.run_campaign(make, [kit.image(1)], kit.image(2), scenario="update")
    second = campaign.run_campaign(make, [kit.image(1)], kit.image(2), scenario="update")
    assert first == second


def _fuses_first_confirm(device, running):
    record, images = _running_set(device, running)
    for image in images:
        device.otp.counters.advance_to(image.component, image.metadata.security_counter)
    state = bootctl.SlotState(record.slot(running.slot).priority, 0, True, False)
    device.bootctl.write(record.with_slot(running.slot, state))


def test_campaign_catches_fuses_raised_before_the_confirm_record(kit, monkeypatch) -> None:
    monkeypatch.setattr(campaign, "confirm", _fuses_first_confirm)
    report = campaign.run_campaign(
        kit.factory(PRESETS["stm32h7"]), [kit.image(1)], kit.image(3), scenario="update"
    )
    assert report.bricks > 0
    assert any("fuses" in f for f in report.failures)


def test_campaign_catches_a_single_copy_reset_to_defaults(kit, monkeypatch) -> None:
    """Android's scheme: one copy; on a bad CRC, defaults (no slot known good)."""
    real_copies = bootctl.BootControl.copies

    def one_copy(self):
        return real_copies(self)[0], None

    def write_copy_0(self, record):
        current = real_copies(self)[0]
        stored = replace(record, seq=(current.seq + 1) if current else 1)
        data = stored.encode() + bytes([self.flash.geometry.erased]) * (self._padded - 24)
        self.flash.erase_sector(0)
        self.flash.program(0, data)
        return stored

    monkeypatch.setattr(bootctl.BootControl, "copies", one_copy)
    monkeypatch.setattr(bootctl.BootControl, "write", write_copy_0)
    monkeypatch.setattr(bootloader, "rebuild", lambda device: (bootctl.BootRecord(0), {}))
    report = campaign.run_campaign(
        kit.factory(PRESETS["stm32h7"]),
        [kit.image(1), kit.image(2)],
        kit.image(3),
        scenario="crash-loop",
    )
    assert report.bricks > 0
    assert any("recovery" in f for f in report.failures)


def test_a_torn_confirm_that_wrote_every_byte_has_landed(kit) -> None:
    """The oracle reads whether confirm's record landed; it does not count operations.

    A program torn after every byte of the record (the rest of the erased sector is what it
    would have written anyway) is a complete write: the new image is then legitimately
    permanent. Counting "confirm started + 2 operations" called this a brick.
    """

    make = kit.factory(PRESETS["mram-1k"])
    device = make()
    session = campaign.Session()
    campaign.settle(device, session, [kit.image(1)])
    assert session.running is not None
    new = kit.image(2)
    case = campaign._Case(device.snapshot(), session.running, new, image_id_of(new), "update")
    case.steps = [campaign.step_install(new), campaign.step_boot, campaign.step_confirm]
    device.arm()
    clean = campaign.Session(running=case.running)
    for step in case.steps:
        step(device, clean)
    assert clean.confirm_at is not None
    program = clean.confirm_at + 1  # confirm: erase, then this program
    padded = -(-bootctl.RECORD_SIZE // device.config.geometry.write_align) * (
        device.config.geometry.write_align
    )
    seed = next(  # a tear that keeps every byte of the record
        s
        for s in range(1, 1000)
        if random.Random(s * 1_000_003 + program).randrange(padded) >= bootctl.RECORD_SIZE
    )

    def landed_after(tear_seed: int) -> bool:
        device.restore(case.base)
        device.arm(FaultPlan(tear_at=program, fill=TearFill.OLD, seed=tear_seed))
        torn = campaign.Session(running=case.running)
        with pytest.raises(PowerLoss):
            for step in case.steps:
                step(device, torn)
        return campaign._confirm_landed(device, case, torn)

    short = next(  # a tear that cuts the record short
        s
        for s in range(1, 1000)
        if random.Random(s * 1_000_003 + program).randrange(padded) < bootctl.RECORD_SIZE - 4
    )
    assert landed_after(seed) and not landed_after(short)
    for tear_seed in (seed, short):  # neither is a brick
        device.restore(case.base)
        plan = FaultPlan(tear_at=program, fill=TearFill.OLD, seed=tear_seed)
        assert campaign._one_fault(device, case, plan) is None
