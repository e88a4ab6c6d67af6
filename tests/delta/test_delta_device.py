"""``device install DIR DELTA``: base from the active slot, refusals before writes, power loss."""

from __future__ import annotations

import io
import random

import pytest

from helpers import make_image
from helpers_delta import HW, container_of, edit, make_delta, resign
from otaguard.crypto.keys import PrivateKey, key_id_bytes
from otaguard.device.bootloader import boot
from otaguard.device.faults import FaultPlan, PowerLoss
from otaguard.device.geometry import PRESETS
from otaguard.device.install import Running, confirm, install, install_delta, running_of
from otaguard.device.model import MAIN, Component, Device, DeviceConfig
from otaguard.device.trust import DeviceTrust
from otaguard.errors import (
    DigestMismatchError,
    HardwareIdError,
    MalformedError,
    RejectedError,
    SecurityCounterError,
)

PAYLOAD = 24 * 1024


@pytest.fixture(scope="module")
def images(key: PrivateKey) -> dict[str, bytes]:
    rnd = random.Random(30)
    v1 = rnd.randbytes(PAYLOAD)
    v2 = edit(v1, 2, 6)
    out = {
        "v1": make_image(v1, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,)),
        "v2": make_image(v2, [key], version="2.0.0", security_counter=2, hardware_ids=(HW,)),
        "v3": make_image(
            edit(v2, 3), [key], version="3.0.0", security_counter=3, hardware_ids=(HW,)
        ),
    }
    out["d12"] = make_delta(key, out["v1"], out["v2"], chunk_size=1 << 13)[0]
    out["d23"] = make_delta(key, out["v2"], out["v3"], chunk_size=1 << 13)[0]
    return out


def new_device(key: PrivateKey) -> Device:
    pub = key.public_key()
    trust = DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,))
    geometry = PRESETS["nor-4k"].with_slot_size(64 * 1024)
    return Device.in_memory(DeviceConfig(geometry, (Component(MAIN, HW),)), trust)


def running_v1(key: PrivateKey, images: dict[str, bytes]) -> tuple[Device, Running]:
    device = new_device(key)
    install(device, {MAIN: io.BytesIO(images["v1"])})
    running = running_of(boot(device))
    confirm(device, running)
    running = running_of(boot(device))
    assert running is not None
    return device, running


def test_delta_install_boots_the_signed_image(key: PrivateKey, images: dict[str, bytes]) -> None:
    device, running = running_v1(key, images)
    result = install_delta(device, io.BytesIO(images["d12"]), running=running)
    full = new_device(key)
    reference = install(full, {MAIN: io.BytesIO(images["v2"])})
    assert result.images[0].image_id == reference.images[0].image_id
    booted = running_of(boot(device))
    assert booted is not None and booted.slot == result.slot
    confirm(device, booted)
    running = running_of(boot(device))  # type: ignore[assignment]
    install_delta(device, io.BytesIO(images["d23"]), running=running)  # the base is now slot b
    assert boot(device).images[0].metadata.version == "3.0.0"


def _refused_without_writes(device: Device, delta: bytes, running: Running, error: type) -> None:
    device.arm()
    before = device.flash.read(0, device.flash.size)
    with pytest.raises(error):
        install_delta(device, io.BytesIO(delta), running=running)
    assert device.clock.count == 0
    assert device.flash.read(0, device.flash.size) == before


def test_wrong_base_refused_before_any_write(key: PrivateKey, images: dict[str, bytes]) -> None:
    device, running = running_v1(key, images)
    _refused_without_writes(device, images["d23"], running, DigestMismatchError)


def test_empty_active_slot_refused(key: PrivateKey, images: dict[str, bytes]) -> None:
    device = new_device(key)
    device.arm()
    with pytest.raises(DigestMismatchError, match="no image"):
        install_delta(device, io.BytesIO(images["d12"]))
    assert device.clock.count == 0


def test_policy_refuses_a_delta_before_any_write(key: PrivateKey, images: dict[str, bytes]) -> None:
    device, running = running_v1(key, images)
    install_delta(device, io.BytesIO(images["d12"]), running=running)
    confirm(device, running_of(boot(device)))
    running = running_of(boot(device))  # type: ignore[assignment]
    assert running is not None
    back = make_delta(key, images["v2"], images["v1"])[0]  # rollback to counter 1
    _refused_without_writes(device, back, running, SecurityCounterError)
    other = make_image(
        b"x" * 100, [key], version="3.0.0", security_counter=3, hardware_ids=("other",)
    )
    _refused_without_writes(
        device, make_delta(key, images["v2"], other)[0], running, HardwareIdError
    )
    _refused_without_writes(device, images["v3"][:0] + images["d12"][:-3], running, MalformedError)


def test_corrupt_chunk_leaves_no_bootable_slot(key: PrivateKey, images: dict[str, bytes]) -> None:
    device, running = running_v1(key, images)
    container = bytearray(container_of(images["d12"]))
    container[-10] ^= 0x40  # inside the last chunk's streams
    bad = resign(key, images["d12"], bytes(container))
    with pytest.raises(RejectedError):
        install_delta(device, io.BytesIO(bad), running=running)
    booted = boot(device)
    assert booted.slot == running.slot and booted.images[0].metadata.version == "1.0.0"


def test_power_loss_anywhere_then_rerun(key: PrivateKey, images: dict[str, bytes]) -> None:
    device, running = running_v1(key, images)
    device.arm()
    total = install_delta(device, io.BytesIO(images["d12"]), running=running).flash_ops
    expected = None
    for cut in sorted(
        {
            0,
            1,
            2,
            total // 3,
            total // 2,
            total - 2,
            total - 1,
            *random.Random(1).sample(range(total), 12),
        }
    ):
        device, running = running_v1(key, images)
        device.arm(FaultPlan(cut_before=cut))
        with pytest.raises(PowerLoss):
            install_delta(device, io.BytesIO(images["d12"]), running=running)
        device.arm()
        after = boot(device)  # power back: v1 still boots (the active slot was only read)
        assert after.images[0].metadata.version == "1.0.0", cut
        rerun = running_of(after)
        result = install_delta(device, io.BytesIO(images["d12"]), running=rerun)
        expected = expected or result.images[0].image_id
        assert result.images[0].image_id == expected
        assert boot(device).images[0].metadata.version == "2.0.0"
