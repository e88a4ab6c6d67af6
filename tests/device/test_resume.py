"""An install rerun after a power cut resumes: sectors already right are not written again."""

from __future__ import annotations

import io

import pytest

from otaguard.device.bootloader import boot
from otaguard.device.faults import FaultPlan, PowerLoss
from otaguard.device.geometry import PRESETS, Region
from otaguard.device.install import install, running_of
from otaguard.device.model import Device
from otaguard.device.slots import write_image


def _ops(device: Device, data: bytes, region: Region) -> int:
    device.arm()
    write_image(device.flash, region, io.BytesIO(data), len(data))
    return device.clock.count


def test_a_second_identical_write_costs_nothing(kit) -> None:
    device = kit.device(PRESETS["nor-4k"])
    region = device.config.layout.slot("b", "main")
    image = kit.image(2)
    first = _ops(device, image, region)
    sectors = -(-len(image) // device.config.geometry.sector_size)
    assert first >= 2 * sectors  # an erase and at least one program per sector
    assert _ops(device, image, region) == 0
    assert device.flash.read(region.offset, len(image)) == image


def test_only_the_sectors_that_differ_are_rewritten(kit) -> None:
    device = kit.device(PRESETS["nor-4k"])
    g = device.config.geometry
    region = device.config.layout.slot("b", "main")
    image = kit.image(2)
    _ops(device, image, region)
    changed = bytearray(image)
    changed[g.sector_size + 5] ^= 0xFF  # the second sector only
    ops = _ops(device, bytes(changed), region)
    assert ops == 1 + g.sector_size // g.program_size  # its erase, its programs
    assert device.flash.read(region.offset, len(image)) == bytes(changed)
    # a tail that left stale bytes after the image in its last sector is rewritten too
    stale = bytes(changed) + b"\x55" * 16
    _ops(device, stale, region)
    assert _ops(device, bytes(changed), region) > 0
    last = (len(changed) // g.sector_size) * g.sector_size
    tail = device.flash.read(region.offset + len(changed), last + g.sector_size - len(changed))
    assert tail == bytes([g.erased]) * len(tail)


@pytest.mark.parametrize("fraction", [0.6, 0.9])  # after at least one whole sector
def test_a_cut_install_reruns_with_fewer_writes(kit, fraction: float) -> None:
    clean = kit.device(PRESETS["nor-4k"])
    running = kit.updated(clean, 1)
    clean.arm()
    result = install(clean, kit.files(kit.image(2)), running=running)
    total = result.flash_ops

    device = kit.device(PRESETS["nor-4k"])
    running = kit.updated(device, 1)
    device.arm(FaultPlan(cut_before=int(total * fraction)))
    with pytest.raises(PowerLoss):
        install(device, kit.files(kit.image(2)), running=running)
    device.arm()
    rerun = running_of(boot(device))  # power back: the old image boots
    assert rerun is not None and rerun.image_ids == running.image_ids
    again = install(device, kit.files(kit.image(2)), running=rerun)
    assert again.images[0].image_id == result.images[0].image_id
    assert again.flash_ops < total  # the sectors written before the cut are kept
    assert boot(device).images[0].metadata.version == "2.0.0"
