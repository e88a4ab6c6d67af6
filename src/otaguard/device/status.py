"""What a device reports about itself: slots, images, boot control, fuses, update state.

``device_status`` only reads: the boot-control copies, each (slot, component)
region verified by streaming it from flash, and the counters. It never writes,
so it works on a device opened read-only and never spends a trial try.

The values are frozen dataclasses so that the CLI's ``device status --json``,
the fleet agent's report to its server and the tests all see one model;
``DeviceStatus.to_json`` is the wire form (the CLI prints it with sorted keys).
An image that *fails* verification is reported with the check that refused it:
it is not trusted for anything, not even its version string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otaguard.device.bootctl import UNBOOTABLE, BootRecord, SlotState, newest
from otaguard.device.geometry import SLOTS, Geometry
from otaguard.device.install import ConfirmResult, Running
from otaguard.device.model import Device
from otaguard.device.slots import verify_slot
from otaguard.device.update_set import FwuState, fwu_state, slot_label
from otaguard.errors import RejectedError

#: Checks that mean "no image here" rather than "an image that does not verify".
_EMPTY = frozenset({"malformed", "truncated"})
#: PSA states in which an update is under way (installed, not yet accepted or reverted).
_PENDING = frozenset({FwuState.STAGED, FwuState.TRIAL, FwuState.REJECTED})


@dataclass(frozen=True)
class ImageStatus:
    """One (slot, component) region that holds an image: verified, or the check it failed.

    ``version``, ``security_counter`` and ``image_id`` are set only for a
    verified image; ``check`` only for one that failed.
    """

    verified: bool
    version: str | None = None
    security_counter: int | None = None
    image_id: str | None = None
    check: str | None = None

    def to_json(self) -> dict[str, Any]:
        if not self.verified:
            return {"verified": False, "check": self.check}
        return {
            "verified": True,
            "version": self.version,
            "security_counter": self.security_counter,
            "image_id": self.image_id,
        }


@dataclass(frozen=True)
class SlotStatus:
    """One slot letter: its boot-control state and each component's image (None: empty)."""

    state: SlotState
    components: Mapping[str, ImageStatus | None]

    @property
    def label(self) -> str:
        return slot_label(self.state)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.label,
            "priority": self.state.priority,
            "tries_remaining": self.state.tries,
            "successful": self.state.successful,
            "unbootable": self.state.unbootable,
            "components": {
                name: None if image is None else image.to_json()
                for name, image in self.components.items()
            },
        }


@dataclass(frozen=True)
class CounterStatus:
    """One component's anti-rollback counter: its value and what is left of its budget."""

    counter: int
    capacity: int
    backend: str

    @property
    def left(self) -> int:
        return self.capacity - self.counter

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "capacity": self.capacity,
            "left": self.left,
            "backend": self.backend,
        }


@dataclass(frozen=True)
class DeviceStatus:
    """A device's state as one value. ``running`` is None when the device is off."""

    geometry: Geometry
    fwu_state: FwuState
    running: Running | None
    sequence: int | None  # of the boot-control record believed; None if neither copy is valid
    valid_copies: int
    slots: Mapping[str, SlotStatus]
    counters: Mapping[str, CounterStatus]
    strict_counter: bool

    @property
    def pending(self) -> bool:
        """An update is installed and not yet accepted (or reverted)."""
        return self.fwu_state in _PENDING

    def installed(self) -> Mapping[str, ImageStatus | None]:
        """Each component's image in the slot that runs (None for all when the device is off)."""
        if self.running is None:
            return dict.fromkeys(self.counters)
        return self.slots[self.running.slot].components

    def to_json(self) -> dict[str, Any]:
        running = self.running
        main = self.counters.get("main")
        return {
            "geometry": self.geometry.to_json(),
            "fwu_state": self.fwu_state.value,
            "pending": self.pending,
            "running": (
                None
                if running is None
                else {
                    "slot": running.slot,
                    "trial": running.trial,
                    "image_ids": list(running.image_ids),
                }
            ),
            "metadata": {"sequence": self.sequence, "valid_copies": self.valid_copies},
            "slots": {letter: slot.to_json() for letter, slot in self.slots.items()},
            "fuses": {name: c.to_json() for name, c in self.counters.items()},
            "fuse_counter": None if main is None else main.counter,
            "fuses_left": None if main is None else main.left,
            "strict_counter": self.strict_counter,
        }


def _image(device: Device, letter: str, component: str) -> ImageStatus | None:
    try:
        image = verify_slot(device, letter, component, for_install=False)
    except RejectedError as exc:
        return None if exc.check in _EMPTY else ImageStatus(False, check=exc.check)
    meta = image.metadata
    return ImageStatus(True, meta.version, meta.security_counter, image.image_id)


def counter_status(device: Device) -> dict[str, CounterStatus]:
    """Each component's anti-rollback counter (reads only the OTP)."""
    store = device.otp.counters
    return {
        name: CounterStatus(store.value(name), store.capacity(name), store.kind)
        for name in device.config.names
    }


def confirm_report(device: Device, result: ConfirmResult) -> dict[str, Any]:
    """What a confirmation did, with the counters it left (``device confirm --json``)."""
    fuses = {
        name: {"counter": c.counter, "left": c.left} for name, c in counter_status(device).items()
    }
    return {
        "power_cut": False,
        "slot": result.slot,
        "version": result.images[0].metadata.version,
        "already_confirmed": result.already_confirmed,
        "fuses": fuses,
        "flash_ops": result.flash_ops,
    }


def device_status(device: Device, running: Running | None) -> DeviceStatus:
    """Read the device's whole state (reads only; see the module docstring)."""
    copies = device.bootctl.copies()
    index = newest(copies)
    record: BootRecord | None = None if index is None else copies[index]
    slots = {
        letter: SlotStatus(
            record.slot(letter) if record else UNBOOTABLE,
            {name: _image(device, letter, name) for name in device.config.names},
        )
        for letter in SLOTS
    }
    counters = counter_status(device)
    return DeviceStatus(
        geometry=device.config.geometry,
        fwu_state=fwu_state(record, device.config.trial_tries, running),
        running=running,
        sequence=None if record is None else record.seq,
        valid_copies=sum(c is not None for c in copies),
        slots=slots,
        counters=counters,
        strict_counter=device.config.strict_counter,
    )
