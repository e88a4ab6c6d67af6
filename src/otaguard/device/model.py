"""The device as one object: configuration (ROM), flash, OTP, trusted material, one op clock.

The configuration is what a real device has in its boot ROM and board
support: geometry, components and their hardware ids, the number of trial
boots, the anti-rollback mode, the region. The simulation keeps it in
``device.json``; the attacker model gives an attacker flash, not ROM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from otaguard.device.bootctl import MAX_TRIES, BootControl, BootRecord
from otaguard.device.faults import NO_FAULTS, FaultPlan, OpClock
from otaguard.device.flash import Flash
from otaguard.device.fuses import MonotonicCounters, Otp, ThermometerCounters
from otaguard.device.geometry import Geometry, Layout
from otaguard.device.trust import DeviceTrust
from otaguard.errors import UsageError

MAIN = "main"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # as the envelope's hardware ids


@dataclass(frozen=True)
class Component:
    """A separately signed firmware part (application, radio...) with its own counter."""

    name: str
    hardware_id: str

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.name) or not _ID_RE.match(self.hardware_id):
            raise UsageError(f"invalid component {self.name!r} or hardware id")


@dataclass(frozen=True)
class DeviceConfig:
    geometry: Geometry
    components: tuple[Component, ...]
    trial_tries: int = 3
    strict_counter: bool = False
    region: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.trial_tries <= MAX_TRIES:
            raise UsageError(f"trial tries must be between 1 and {MAX_TRIES}")
        Layout(self.geometry, self.names)  # validates the component names

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    @property
    def layout(self) -> Layout:
        return Layout(self.geometry, self.names)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise UsageError(f"this device has no component {name!r} (it has {', '.join(self.names)})")


@dataclass
class Device:
    config: DeviceConfig
    flash: Flash
    otp: Otp
    trust: DeviceTrust
    clock: OpClock = field(default_factory=OpClock)

    def __post_init__(self) -> None:
        self.arm(self.clock.plan)

    @property
    def bootctl(self) -> BootControl:
        return BootControl(self.flash, self.config.layout)

    def arm(self, plan: FaultPlan = NO_FAULTS) -> OpClock:
        """Start counting operations afresh (a new power-on), with ``plan``'s faults."""
        self.clock = OpClock(plan)
        self.flash.clock = self.clock
        self.otp.counters.clock = self.clock
        return self.clock

    @classmethod
    def in_memory(
        cls,
        config: DeviceConfig,
        trust: DeviceTrust,
        *,
        fuse_bits: int = 64,
        counter_backend: str = "fuses",
    ) -> Device:
        """A factory-fresh device: erased flash, anchors burned, counters at zero."""
        flash = Flash.blank(config.geometry, config.layout.size)
        otp = Otp(tuple(sorted(trust.anchors)), fresh_counters(config, fuse_bits, counter_backend))
        device = cls(config, flash, otp, trust)
        device.provision()
        return device

    def provision(self) -> None:
        """Factory step: a first boot-control record, both slots empty and unbootable."""
        self.bootctl.write(BootRecord(0))
        self.arm()

    def snapshot(self) -> tuple[bytes, dict[str, object]]:
        return self.flash.snapshot(), self.otp.to_json()

    def restore(self, snap: tuple[bytes, dict[str, object]]) -> None:
        self.flash.restore(snap[0])
        self.otp = Otp.from_json(snap[1])
        self.arm(self.clock.plan)


def fresh_counters(
    config: DeviceConfig, fuse_bits: int, backend: str
) -> ThermometerCounters | MonotonicCounters:
    if backend == "fuses":
        return ThermometerCounters.fresh(config.names, fuse_bits)
    if backend == "rpmb":
        return MonotonicCounters.fresh(config.names)
    raise UsageError("the counter backend is 'fuses' or 'rpmb'")
