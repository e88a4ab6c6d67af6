"""Device fixtures: a release key, small signed images, and fresh in-memory devices.

Images are 8 KiB so that an exhaustive fault campaign over every flash
operation stays in seconds; slots are 32 KiB (or one sector, if larger).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import cached_key, make_image
from otaguard.crypto.keys import KeyType, PrivateKey, key_id_bytes, public_key_pem
from otaguard.device.geometry import PRESETS, Geometry
from otaguard.device.install import Running
from otaguard.device.model import MAIN, Component, Device, DeviceConfig
from otaguard.device.trust import DeviceTrust

HW = "acme-ecu-v2"
PAYLOAD = 8 * 1024


def small(geometry: Geometry) -> Geometry:
    return geometry.with_slot_size(max(geometry.sector_size, 32 * 1024))


@dataclass
class Kit:
    """One release key, images v1..v5 (counter = major version), device factories."""

    key: PrivateKey
    images: dict[int, bytes]

    @property
    def trust(self) -> DeviceTrust:
        pub = self.key.public_key()
        return DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,))

    def image(self, counter: int, **kw: object) -> bytes:
        if not kw and counter in self.images:
            return self.images[counter]
        payload = kw.pop("payload", None) or os.urandom(PAYLOAD)
        return make_image(
            payload,  # type: ignore[arg-type]
            kw.pop("keys", None) or [self.key],  # type: ignore[arg-type]
            version=str(kw.pop("version", f"{counter}.0.0")),
            security_counter=counter,
            **kw,  # type: ignore[arg-type]
        )

    def config(self, geometry: Geometry | None = None, **kw: object) -> DeviceConfig:
        components = kw.pop("components", None) or (Component(MAIN, HW),)
        return DeviceConfig(
            small(geometry or PRESETS["nor-4k"]),
            components,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )

    def device(self, geometry: Geometry | None = None, **kw: object) -> Device:
        fuse_bits = int(kw.pop("fuse_bits", 64))  # type: ignore[call-overload]
        backend = str(kw.pop("counter_backend", "fuses"))
        return Device.in_memory(
            self.config(geometry, **kw), self.trust, fuse_bits=fuse_bits, counter_backend=backend
        )

    def factory(self, geometry: Geometry, **kw: object) -> Callable[[], Device]:
        return lambda: self.device(geometry, **dict(kw))

    @staticmethod
    def files(image: bytes) -> dict[str, io.BytesIO]:
        return {MAIN: io.BytesIO(image)}

    def updated(self, device: Device, *counters: int) -> Running:
        """Install, boot and confirm each image in turn; return what runs at the end."""
        from otaguard.device.bootloader import boot
        from otaguard.device.install import confirm, install, running_of

        running = None
        for counter in counters:
            install(device, self.files(self.image(counter)), running=running)
            running = running_of(boot(device))
            confirm(device, running)
            running = running_of(boot(device))
        assert running is not None
        return running


@pytest.fixture(scope="session")
def kit() -> Kit:
    key = cached_key(KeyType.ED25519)
    images = {
        n: make_image(os.urandom(PAYLOAD), [key], version=f"{n}.0.0", security_counter=n)
        for n in range(1, 6)
    }
    return Kit(key, images)


@pytest.fixture
def files(tmp_path: Path, kit: Kit) -> dict[str, Path]:
    """For CLI tests: the release public key and images v1..v4 as files."""
    out = {"pub": tmp_path / "release.pub"}
    out["pub"].write_bytes(public_key_pem(kit.key.public_key()))
    for n in range(1, 5):
        out[f"v{n}"] = tmp_path / f"fw-{n}.img"
        out[f"v{n}"].write_bytes(kit.image(n))
    return out


def init_device_dir(cli, path: Path, files: dict[str, Path], *extra: str) -> Path:
    """``otaguard device init`` of a device trusting ``files["pub"]`` (32 KiB slots)."""
    result = cli(
        "device",
        "init",
        path,
        "--trusted-key",
        files["pub"],
        "--hardware-id",
        HW,
        "--slot-size",
        "32768",
        *extra,
    )
    assert result.code == 0, result.err
    return path
