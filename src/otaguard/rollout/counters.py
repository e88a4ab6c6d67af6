"""What the evaluator sees of a fleet: per-wave counters, kept incrementally, one report at a time.

Each device of a campaign is in exactly one :class:`Stage`; a :class:`Transition` report moves
it from one stage to the next, so a wave's counters are the number of devices in each stage and
``add`` costs O(1) whatever the fleet size. The server keeps the same numbers as columns
(``SET downloading = downloading - 1, installed = installed + 1``) and hands a snapshot to the
evaluator each tick; the simulator applies a tick's transitions in bulk (``count``).

Health reports (resets, crashes, heartbeat, custom metrics over a window after the update) go
into a :class:`HealthTally`: sums and sums of squares, which is all the tests of
:mod:`otaguard.rollout.stats` need. Updated devices report into their wave's tally; devices of
the same selector not yet updated report into the campaign's control tally.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TypeVar

_V = TypeVar("_V")


class FailureClass(Enum):
    """Why an attempt failed. Transient failures are retried with back-off (the policy's
    ``retry``); a deterministic one ends the device's attempt at once."""

    NETWORK = "network"
    POWER = "power"
    VERIFICATION = "verification"  # the agent's TUF/director checks refused the release
    INCOMPATIBLE = "incompatible"  # the device's ECU versions are not among those declared
    INSTALL = "install"  # writing or checking the inactive slot failed
    BOOT = "boot"  # the trial boot failed; the bootloader went back to the old slot

    @property
    def transient(self) -> bool:
        return self in (FailureClass.NETWORK, FailureClass.POWER)


class Stage(Enum):
    OFFERED = "offered"  # told about the release, nothing reported since
    DOWNLOADING = "downloading"
    INSTALLED = "installed"  # written and booted in trial, not yet confirmed
    CONFIRMED = "confirmed"  # the outcome that counts as a success
    FAILED = "failed"  # with a FailureClass
    SILENT = "silent"  # offered, no outcome before the deadline: counts as a failure
    ABANDONED = "abandoned"  # a download stopped by a halt
    REVERTED = "reverted"  # told to leave its trial boot by a halt


_IN_FLIGHT = (Stage.OFFERED, Stage.DOWNLOADING, Stage.INSTALLED)
#: No report moves a device out of these (a silent device may still report its outcome).
_FINAL = (Stage.CONFIRMED, Stage.FAILED, Stage.ABANDONED, Stage.REVERTED)


@dataclass(frozen=True)
class Transition:
    """One device moved from ``before`` (None: newly offered) to ``after``."""

    before: Stage | None
    after: Stage
    failure: FailureClass | None = None

    def __post_init__(self) -> None:
        if (self.after is Stage.FAILED) != (self.failure is not None):
            raise ValueError("a failure class goes with a move to FAILED, and only then")
        if self.before in _FINAL:
            raise ValueError(f"{self.before.value} is final")
        if self.before is self.after:
            raise ValueError(f"no move: {self.after.value} to itself")


@dataclass(frozen=True)
class Retried:
    """A transient failure that will be retried: counted for the audit, not a failure."""

    failure: FailureClass

    def __post_init__(self) -> None:
        if not self.failure.transient:
            raise ValueError(f"{self.failure.value} failures are not retried")


def _frozen(mapping: Mapping[str, _V] | None) -> Mapping[str, _V]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class HealthReport:
    """One device's health over one window: events counted, flags raised, metric values."""

    exposure_s: float  # how long the window observed the device
    counts: Mapping[str, int] = field(default_factory=dict)  # resets, crashes...
    flags: Mapping[str, bool] = field(default_factory=dict)  # heartbeat_lost...
    metrics: Mapping[str, float] = field(default_factory=dict)  # boot_time_ms...
    new_device: bool = True  # the device's first health report in this tally

    def __post_init__(self) -> None:
        if not (math.isfinite(self.exposure_s) and self.exposure_s >= 0):
            raise ValueError("exposure must be a finite number of seconds >= 0")
        if any(v < 0 for v in self.counts.values()):
            raise ValueError("event counts are >= 0")
        if not all(math.isfinite(v) for v in self.metrics.values()):
            raise ValueError("metric values must be finite")


@dataclass(frozen=True)
class HealthTally:
    """Sums over health reports. ``flags`` maps a name to (flagged, reported); ``metrics`` to
    (n, sum, sum of squares)."""

    devices: int = 0
    exposure_s: float = 0.0
    counts: Mapping[str, int] = field(default_factory=lambda: _frozen(None))
    flags: Mapping[str, tuple[int, int]] = field(default_factory=lambda: _frozen(None))
    metrics: Mapping[str, tuple[int, float, float]] = field(default_factory=lambda: _frozen(None))

    def add(self, report: HealthReport, count: int = 1) -> HealthTally:
        counts = dict(self.counts)
        for name, value in report.counts.items():
            counts[name] = counts.get(name, 0) + value * count
        flags = dict(self.flags)
        for name, flagged in report.flags.items():
            hit, seen = flags.get(name, (0, 0))
            flags[name] = (hit + count * int(flagged), seen + count)
        metrics = dict(self.metrics)
        for name, x in report.metrics.items():
            n, total, squares = metrics.get(name, (0, 0.0, 0.0))
            metrics[name] = (n + count, total + x * count, squares + x * x * count)
        return HealthTally(
            devices=self.devices + (count if report.new_device else 0),
            exposure_s=self.exposure_s + report.exposure_s * count,
            counts=_frozen(counts),
            flags=_frozen(flags),
            metrics=_frozen(metrics),
        )

    def __add__(self, other: HealthTally) -> HealthTally:
        counts = dict(self.counts)
        for name, value in other.counts.items():
            counts[name] = counts.get(name, 0) + value
        flags = dict(self.flags)
        for name, (hit, seen) in other.flags.items():
            a, b = flags.get(name, (0, 0))
            flags[name] = (a + hit, b + seen)
        metrics = dict(self.metrics)
        for name, (n, total, squares) in other.metrics.items():
            a, s, q = metrics.get(name, (0, 0.0, 0.0))
            metrics[name] = (a + n, s + total, q + squares)
        return HealthTally(
            self.devices + other.devices,
            self.exposure_s + other.exposure_s,
            _frozen(counts),
            _frozen(flags),
            _frozen(metrics),
        )

    def mean_var(self, name: str) -> tuple[int, float, float]:
        """(n, mean, unbiased variance) of a metric; variance 0 below two observations."""
        n, total, squares = self.metrics.get(name, (0, 0.0, 0.0))
        if n == 0:
            return 0, 0.0, 0.0
        mean = total / n
        var = max(0.0, (squares - total * mean) / (n - 1)) if n > 1 else 0.0
        return n, mean, var


def _stage_field(stage: Stage, failure: FailureClass | None) -> str:
    return f"failed_{failure.value}" if stage is Stage.FAILED and failure else stage.value


Report = Transition | Retried | HealthReport


@dataclass(frozen=True)
class WaveCounters:
    """Devices of one wave in each stage (failed ones by class), retries, and health sums."""

    offered: int = 0
    downloading: int = 0
    installed: int = 0
    confirmed: int = 0
    silent: int = 0
    abandoned: int = 0
    reverted: int = 0
    failed_network: int = 0
    failed_power: int = 0
    failed_verification: int = 0
    failed_incompatible: int = 0
    failed_install: int = 0
    failed_boot: int = 0
    retries: int = 0
    health: HealthTally = field(default_factory=HealthTally)

    def add(self, report: Report, count: int = 1) -> WaveCounters:
        """The counters after ``count`` identical reports (the server adds one at a time)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if isinstance(report, HealthReport):
            return dataclasses.replace(self, health=self.health.add(report, count))
        if isinstance(report, Retried):
            return dataclasses.replace(self, retries=self.retries + count)
        changes: dict[str, int] = {}
        if report.before is not None:
            source = _stage_field(report.before, None)
            remaining = getattr(self, source) - count
            if remaining < 0:
                raise ValueError(f"more devices leave {source} than are in it")
            changes[source] = remaining
        target = _stage_field(report.after, report.failure)
        changes[target] = getattr(self, target) + count
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def __add__(self, other: WaveCounters) -> WaveCounters:
        values = {
            f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)
        }
        return WaveCounters(**values)

    @property
    def failed(self) -> int:
        return (
            self.failed_network
            + self.failed_power
            + self.failed_verification
            + self.failed_incompatible
            + self.failed_install
            + self.failed_boot
        )

    @property
    def failures(self) -> int:
        """Failed outright or silent past the deadline."""
        return self.failed + self.silent

    @property
    def in_flight(self) -> int:
        """Offered, no outcome yet (and no halt has stopped them)."""
        return sum(getattr(self, s.value) for s in _IN_FLIGHT)

    @property
    def outcomes(self) -> int:
        return self.confirmed + self.failures

    @property
    def total(self) -> int:
        """Every device ever offered in this wave."""
        return self.in_flight + self.outcomes + self.abandoned + self.reverted

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "health"
        }
        out["health_devices"] = self.health.devices
        return out


@dataclass(frozen=True)
class CampaignCounters:
    """One tick's input: a snapshot of every opened wave's counters and the control tally."""

    waves: tuple[WaveCounters, ...] = ()
    control: HealthTally = field(default_factory=HealthTally)

    def pooled(self, upto: int) -> WaveCounters:
        """Waves 0..upto added together."""
        total = WaveCounters()
        for wave in self.waves[: upto + 1]:
            total = total + wave
        return total
