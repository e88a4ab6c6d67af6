"""What an attacker with physical access does to a device: write flash directly.

The attacker model gives an attacker the flash (a debug probe, a desoldered
chip), never the ROM or the OTP. ``flash_raw`` is that attacker: it writes
any bytes into a slot, skipping every check ``install`` makes, and can point
boot control at the slot. The demo and the tests use it to show that what
protects the device is the bootloader's verification at every boot, not the
install path: whatever is written here still has to verify (signature,
hardware id, counter >= the fuses) before it runs.
"""

from __future__ import annotations

from otaguard.device.bootctl import BootRecord, SlotState
from otaguard.device.bootloader import SECOND, TOP
from otaguard.device.install import OTHER
from otaguard.device.model import Device
from otaguard.device.slots import Source, write_image


def activate(record: BootRecord, letter: str) -> BootRecord:
    """``record`` with ``letter`` confirmed and first in line; the other slot keeps its state
    at the priority just below (if it had one)."""
    record = record.with_slot(letter, SlotState(TOP, 0, successful=True, unbootable=False))
    other = record.slot(OTHER[letter])
    if other.priority:
        record = record.with_slot(
            OTHER[letter], SlotState(SECOND, other.tries, other.successful, other.unbootable)
        )
    return record


def flash_raw(
    device: Device,
    letter: str,
    component: str,
    source: Source,
    length: int,
    *,
    point_boot_control: bool = False,
) -> None:
    """Write ``length`` bytes of ``source`` into slot ``letter`` of ``component``, unchecked.

    With ``point_boot_control``, boot control is rewritten (see :func:`activate`),
    starting from a blank record if neither copy is valid.
    """
    device.config.component(component)
    write_image(device.flash, device.config.layout.slot(letter, component), source, length)
    if point_boot_control:
        device.bootctl.write(activate(device.bootctl.load() or BootRecord(0), letter))
