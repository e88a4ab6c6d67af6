"""``device/attack.py``: the physical attacker writes any flash; only boot verification stands."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import cached_key
from otaguard.crypto.keys import KeyType
from otaguard.device.attack import activate, flash_raw
from otaguard.device.bootctl import MAX_PRIORITY, MAX_TRIES, BootRecord, SlotState
from otaguard.device.bootloader import SECOND, TOP, boot
from otaguard.device.install import OTHER
from otaguard.device.model import MAIN
from otaguard.device.slots import extent_in
from otaguard.errors import UsageError

from .conftest import Kit

states = st.builds(
    SlotState,
    st.integers(0, MAX_PRIORITY),
    st.integers(0, MAX_TRIES),
    st.booleans(),
    st.booleans(),
)


@given(st.integers(0, 2**32 - 1), states, states, st.sampled_from("ab"))
def test_activate_puts_the_slot_first_and_keeps_the_other(
    seq: int, a: SlotState, b: SlotState, letter: str
) -> None:
    record = BootRecord(seq, a, b)
    out = activate(record, letter)
    assert out.slot(letter) == SlotState(TOP, 0, successful=True, unbootable=False)
    before, after = record.slot(OTHER[letter]), out.slot(OTHER[letter])
    assert after.priority == (SECOND if before.priority else 0)
    assert (after.tries, after.successful, after.unbootable) == (
        before.tries,
        before.successful,
        before.unbootable,
    )
    assert out.slot(letter).bootable


def test_forged_image_written_raw_lands_but_never_boots(kit: Kit) -> None:
    device = kit.device()
    running = kit.updated(device, 2)
    forged = kit.image(5, keys=[cached_key(KeyType.ED25519, 7)])
    flash_raw(device, "b", MAIN, io.BytesIO(forged), len(forged), point_boot_control=True)
    region = device.config.layout.slot("b", MAIN)
    assert device.flash.read(region.offset, len(forged)) == forged  # no check stopped the write
    assert extent_in(device.flash, region) == len(forged)
    assert device.bootctl.load().slot("b").priority == TOP  # type: ignore[union-attr]
    result = boot(device)
    assert result.slot == running.slot and result.images[0].metadata.version == "2.0.0"
    assert result.rejected[0][:2] == ("b", "unknown-key")


def test_point_boot_control_rebuilds_a_destroyed_record(kit: Kit) -> None:
    device = kit.device()
    for region in device.config.layout.meta_copies:  # both copies wiped
        device.flash.erase_sector(region.offset // device.config.geometry.sector_size)
    image = kit.image(1)
    flash_raw(device, "a", MAIN, io.BytesIO(image), len(image), point_boot_control=True)
    record = device.bootctl.load()
    assert record is not None and record.slot("a").successful and not record.slot("b").bootable
    assert boot(device).images[0].metadata.version == "1.0.0"


def test_unknown_component_is_a_usage_error_before_any_write(kit: Kit) -> None:
    device = kit.device()
    device.arm()
    with pytest.raises(UsageError, match="no component 'radio'"):
        flash_raw(device, "a", "radio", io.BytesIO(b"x"), 1)
    assert device.clock.count == 0
