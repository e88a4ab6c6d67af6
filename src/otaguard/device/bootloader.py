"""The bootloader: pick a slot, verify every image in it, spend a trial try, boot.

At every reset:

1. Load the newest valid boot-control copy. If neither copy is valid (never
   the result of a power cut, see ``bootctl``; only of outside corruption),
   rebuild the record from what verifies: the slot whose images match the
   fuse counters becomes the permanent one, the other a trial fallback.
2. Take the slots by priority. For each: a trial out of tries is marked
   unbootable (the automatic revert); otherwise every component image in it
   is verified by streaming it from flash -- signature against the OTP
   anchors, hardware id, security counter >= the fuses, within the fuse
   budget. Any failure marks the slot unbootable and the next one is tried.
3. A trial slot spends one try, persisted *before* it runs, so a crash loop
   always consumes its tries. A confirmed slot whose counter is above the
   fuses (a confirm cut short after its metadata write) raises them now.
4. No slot left: recovery. Nothing unverified is ever run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from otaguard.device.bootctl import UNBOOTABLE, BootRecord, SlotState
from otaguard.device.geometry import SLOTS
from otaguard.device.model import Device
from otaguard.device.slots import SlotImage, verify_slot
from otaguard.errors import RejectedError

TOP, SECOND = 15, 14


@dataclass(frozen=True)
class BootResult:
    state: str  # "confirmed", "trial" or "recovery"
    slot: str | None
    images: tuple[SlotImage, ...]
    tries_left: int
    rejected: tuple[tuple[str, str, str], ...]  # (slot, check, reason)
    rebuilt: bool
    flash_ops: int  # counted operations this boot used

    @property
    def main(self) -> SlotImage | None:
        return self.images[0] if self.images else None

    def to_json(self) -> dict[str, Any]:
        """The boot as reported (``device boot --json``): what booted, what was refused."""
        main = self.main
        return {
            "power_cut": False,
            "state": self.state,
            "slot": self.slot,
            "version": main.metadata.version if main else None,
            "security_counter": main.metadata.security_counter if main else None,
            "tries_left": self.tries_left,
            "rejected": [{"slot": s, "check": c, "reason": why} for s, c, why in self.rejected],
            "rebuilt_metadata": self.rebuilt,
            "flash_ops": self.flash_ops,
            "components": {i.component: i.to_json() for i in self.images},
        }


def verify_set(device: Device, letter: str, *, for_install: bool = False) -> tuple[SlotImage, ...]:
    """Every component of slot ``letter``, verified; one failure fails the whole set."""
    return tuple(
        verify_slot(device, letter, name, for_install=for_install) for name in device.config.names
    )


def _matches_fuses(device: Device, images: tuple[SlotImage, ...]) -> bool:
    counters = device.otp.counters
    return all(i.metadata.security_counter == counters.value(i.component) for i in images)


def rebuild(device: Device) -> tuple[BootRecord, dict[str, tuple[SlotImage, ...]]]:
    """A boot-control record recovered from the slots themselves (both copies invalid)."""
    verified: dict[str, tuple[SlotImage, ...]] = {}
    for letter in SLOTS:
        try:
            verified[letter] = verify_set(device, letter)
        except RejectedError:
            continue
    record = BootRecord(0)
    order = sorted(
        verified,
        key=lambda s: (
            not _matches_fuses(device, verified[s]),
            sum(i.metadata.security_counter for i in verified[s]),
        ),
    )
    if order:
        record = record.with_slot(order[0], SlotState(TOP, 0, successful=True, unbootable=False))
    if len(order) > 1:
        tries = device.config.trial_tries
        record = record.with_slot(order[1], SlotState(SECOND, tries, unbootable=False))
    return record, verified


def boot(device: Device) -> BootResult:
    """One reset of the device. Counted flash operations may raise ``PowerLoss``."""
    bootctl = device.bootctl
    start = device.clock.count
    loaded = bootctl.load()
    cache: dict[str, tuple[SlotImage, ...]] = {}
    rebuilt = loaded is None
    if loaded is None:
        loaded, cache = rebuild(device)
        loaded = bootctl.write(loaded)
    record: BootRecord = loaded
    rejected: list[tuple[str, str, str]] = []
    candidates = sorted(
        (s for s in SLOTS if record.slot(s).priority > 0 and not record.slot(s).unbootable),
        key=lambda s: -record.slot(s).priority,
    )
    for letter in candidates:
        state = record.slot(letter)
        if not state.bootable:  # a trial that used up its tries without being confirmed
            rejected.append((letter, "tries-exhausted", "trial not confirmed in time: reverted"))
            record = bootctl.write(record.with_slot(letter, UNBOOTABLE))
            continue
        try:
            images = cache[letter] if letter in cache else verify_set(device, letter)
        except RejectedError as exc:
            rejected.append((letter, exc.check, str(exc)))
            record = bootctl.write(record.with_slot(letter, UNBOOTABLE))
            continue
        if state.successful:
            for image in images:
                device.otp.counters.advance_to(image.component, image.metadata.security_counter)
            return _result(device, start, "confirmed", letter, images, 0, rejected, rebuilt)
        record = bootctl.write(record.with_slot(letter, replace(state, tries=state.tries - 1)))
        return _result(device, start, "trial", letter, images, state.tries - 1, rejected, rebuilt)
    return _result(device, start, "recovery", None, (), 0, rejected, rebuilt)


def _result(
    device: Device,
    start: int,
    state: str,
    slot: str | None,
    images: tuple[SlotImage, ...],
    tries: int,
    rejected: list[tuple[str, str, str]],
    rebuilt: bool,
) -> BootResult:
    return BootResult(
        state, slot, images, tries, tuple(rejected), rebuilt, device.clock.count - start
    )
