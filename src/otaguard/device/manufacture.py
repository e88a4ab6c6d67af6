"""Manufacturing a device from a line's options: what ``otaguard device init`` decides.

Why a module: the flash geometry (a preset, with the erased value and slot size
overridden), the component list (``NAME=HWID``) and the trust anchors read from files
are the factory's decisions; the CLI parses and prints, and a provisioning station or
the agent's tests manufacture devices by the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otaguard._files import read_bounded
from otaguard.crypto.loader import MAX_KEY_FILE
from otaguard.device.geometry import Geometry, preset
from otaguard.device.model import MAIN, Component, DeviceConfig
from otaguard.device.store import init_device, parse_anchor
from otaguard.errors import KeyLoadError, UsageError


def geometry_of(name: str, *, erased_value: int | None, slot_size: int | None) -> Geometry:
    """The preset ``name``, its erased value and slot size overridden where given."""
    geometry = preset(name)
    if erased_value is not None:
        geometry = geometry.with_erased(erased_value)
    if slot_size:
        geometry = geometry.with_slot_size(slot_size)
    return geometry


def components_of(hardware_id: str, specs: Sequence[str]) -> tuple[Component, ...]:
    """The main component (``hardware_id``), then one per ``NAME=HWID``."""
    components = [Component(MAIN, hardware_id)]
    for spec in specs:
        name, sep, hwid = spec.partition("=")
        if not sep:
            raise UsageError(f"--component {spec!r}: expected NAME=HWID")
        components.append(Component(name, hwid))
    return tuple(components)


def read_anchors(paths: Sequence[str]) -> list[Any]:
    """Each file's trust anchor (a public key or a root certificate), named if unusable."""
    anchors = []
    for path in paths:
        try:
            anchors.append(parse_anchor(read_bounded(path, MAX_KEY_FILE, "trusted key")))
        except KeyLoadError as exc:
            raise KeyLoadError(f"{path}: {exc}") from exc
    return anchors


@dataclass(frozen=True)
class Manufactured:
    directory: Path
    config: DeviceConfig
    anchors: int
    counter_backend: str
    fuse_bits: int

    def to_json(self) -> dict[str, Any]:
        fuses = self.counter_backend == "fuses"
        return {
            "device": str(self.directory),
            "geometry": self.config.geometry.to_json(),
            "anchors": self.anchors,
            "components": {c.name: c.hardware_id for c in self.config.components},
            "counter_backend": self.counter_backend,
            "fuse_bits": self.fuse_bits if fuses else None,
            "trial_tries": self.config.trial_tries,
            "strict_counter": self.config.strict_counter,
            "region": self.config.region,
        }


def manufacture(
    directory: Path,
    config: DeviceConfig,
    anchor_files: Sequence[str],
    *,
    fuse_bits: int,
    counter_backend: str,
) -> Manufactured:
    """A new device in ``directory`` (all or nothing): blank flash, anchors in OTP."""
    anchors = read_anchors(anchor_files)
    init_device(directory, config, anchors, fuse_bits=fuse_bits, counter_backend=counter_backend)
    return Manufactured(directory, config, len(anchors), counter_backend, fuse_bits)
