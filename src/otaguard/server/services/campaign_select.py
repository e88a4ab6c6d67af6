"""Which devices a campaign concerns: its selector, its cohorts, and ECU compatibility.

Pure functions over values the caller read (a device's enrolment group, its ECUs), so the
check-in can decide from an in-process cache without a query per campaign:

* the **selector** matches on the enrolment group's hardware id, region and tags (every tag
  given must be equal) and, when ids are listed, on the device id too (all conditions given
  must hold);
* the **cohort**: a device is in wave k of the campaign when its keyed-hash bucket
  (:func:`otaguard.rollout.bucket`) is below the plan's threshold k, so it is offered the
  release once the campaign has opened wave k, never before;
* **compatibility** (UNECE R156 "software configuration"): each ECU the release updates,
  and each ECU the campaign names, must run a version the campaign declares compatible.
  An updated ECU without a declared version list, or reporting no version, is
  incompatible: unknown is not compatible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otaguard.rollout.cohort import WavePlan, bucket

TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")


@dataclass(frozen=True)
class GroupInfo:
    """What the selector reads of a device's enrolment group."""

    hardware_id: str
    region: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Selector:
    hardware_id: str | None = None
    region: str | None = None
    tags: Mapping[str, str] | None = None
    devices: tuple[str, ...] = ()
    _device_set: frozenset[str] = field(default=frozenset(), init=False, compare=False)

    def __post_init__(self) -> None:
        # a check-in tests membership: a set, built once (a selector may list 10,000 ids)
        object.__setattr__(self, "_device_set", frozenset(self.devices))

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware_id": self.hardware_id,
            "region": self.region,
            "tags": dict(self.tags or {}),
            "devices": list(self.devices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selector:
        return cls(
            data.get("hardware_id"),
            data.get("region"),
            dict(data.get("tags") or {}),
            tuple(data.get("devices") or ()),
        )

    @property
    def empty(self) -> bool:
        return not (self.hardware_id or self.region or self.tags or self.devices)

    def matches_group(self, group: GroupInfo) -> bool:
        if self.hardware_id is not None and group.hardware_id != self.hardware_id:
            return False
        if self.region is not None and group.region != self.region:
            return False
        return all(group.tags.get(k) == v for k, v in (self.tags or {}).items())

    def matches(self, device_id: str, group: GroupInfo | None) -> bool:
        if group is None or not self.matches_group(group):
            return False
        return not self.devices or device_id in self._device_set


def in_waves(key: bytes, campaign_id: str, device_id: str, plan: WavePlan, upto: int) -> bool:
    """The device's cohort is among waves 0..upto."""
    return bucket(key, campaign_id, device_id) < plan.thresholds[upto]


def wave_of(key: bytes, campaign_id: str, device_id: str, plan: WavePlan) -> int:
    return plan.wave_of(bucket(key, campaign_id, device_id))


@dataclass(frozen=True)
class EcuVersion:
    serial: str
    hardware_id: str
    version: str | None


def incompatible_ecus(
    compatible: Mapping[str, Sequence[str]],
    ecus: Iterable[EcuVersion],
    updated_hardware: Iterable[str],
) -> list[str]:
    """The device's ECUs that rule the release out ([] = compatible), as ``serial=version``.

    ``compatible`` maps an ECU's hardware id or serial to the versions the release may be
    installed over; ``updated_hardware``: the hardware ids the release's targets are for.
    """
    updated = set(updated_hardware)
    ecu_list = list(ecus)
    out: list[str] = []
    for ecu in ecu_list:
        allowed = compatible.get(ecu.serial, compatible.get(ecu.hardware_id))
        if allowed is None:
            if ecu.hardware_id in updated:
                out.append(f"{ecu.serial}={ecu.version or '?'} (no compatible version declared)")
            continue
        if ecu.version is None or ecu.version not in allowed:
            out.append(f"{ecu.serial}={ecu.version or '?'}")
    return out
