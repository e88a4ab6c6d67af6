"""Device side: boot-time verification of 1 MiB and 64 MiB slots, and the full fault campaign.

Why (issue 3, "Benchmarks"): a bootloader's verification sits on every boot's critical path, so
its cost per slot size is what a product team budgets; and the power-loss campaign is the
acceptance test, so its size (fault points) and run time show what the claim "0 bricks" covers
and whether it stays affordable in CI. Runs the library in-process on an in-memory flash (the
file-backed flash adds page-cache copies, not verification work), Ed25519 release key.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

from _common import quick

TITLE = "Device: boot verification and the fault campaign"

MIB = 2**20
RUNS = 5


def _setup() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "src"))


def _boot_times() -> list[str]:
    from otaguard.crypto.keys import KeyType, generate_private_key, key_id_bytes
    from otaguard.crypto.signer import KeySigner
    from otaguard.device.bootloader import boot
    from otaguard.device.geometry import PRESETS
    from otaguard.device.install import confirm, install, running_of
    from otaguard.device.model import MAIN, Component, Device, DeviceConfig
    from otaguard.device.trust import DeviceTrust
    from otaguard.image import sign_stream

    key = generate_private_key(KeyType.ED25519)
    pub = key.public_key()
    trust = DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,))
    rows = [
        "| slot | image | boot (verify from flash), median of 5 | install (flash operations) |",
        "|---|---|---|---|",
    ]
    sizes = (1, 8) if quick() else (1, 64)
    for mib in sizes:
        payload = os.urandom(mib * MIB - 4096)
        out = io.BytesIO()
        sign_stream(
            io.BytesIO(payload),
            out,
            [KeySigner(key)],
            version="1.0.0",
            security_counter=1,
            hardware_ids=["acme-ecu-v2"],
            created=1_790_000_000,
        )
        geometry = PRESETS["nor-4k"].with_slot_size(mib * MIB)
        device = Device.in_memory(DeviceConfig(geometry, (Component(MAIN, "acme-ecu-v2"),)), trust)
        start = time.perf_counter()
        result = install(device, {MAIN: io.BytesIO(out.getvalue())})
        install_s = time.perf_counter() - start
        confirm(device, running_of(boot(device)))  # permanent, so every boot below is alike
        times = []
        for _ in range(RUNS):
            device.arm()
            start = time.perf_counter()
            booted = boot(device)
            times.append(time.perf_counter() - start)
            if running_of(booted) is None:
                raise RuntimeError("the installed image did not boot")
        median = statistics.median(times)
        rows.append(
            f"| {mib} MiB | {len(out.getvalue()) / MIB:.2f} MiB | "
            f"{median * 1000:.1f} ms ({len(payload) / MIB / median:.0f} MiB/s) | "
            f"{install_s:.2f} s ({result.flash_ops} ops) |"
        )
    return rows


def _campaign() -> list[str]:
    from otaguard.crypto.keys import KeyType, generate_private_key, key_id_bytes
    from otaguard.crypto.signer import KeySigner
    from otaguard.device import campaign
    from otaguard.device.geometry import PRESETS
    from otaguard.device.model import MAIN, Component, Device, DeviceConfig
    from otaguard.device.trust import DeviceTrust
    from otaguard.image import sign_stream

    key = generate_private_key(KeyType.ED25519)
    pub = key.public_key()
    trust = DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,))

    def image(counter: int) -> bytes:
        out = io.BytesIO()
        sign_stream(
            io.BytesIO(os.urandom(8 * 1024)),
            out,
            [KeySigner(key)],
            version=f"{counter}.0.0",
            security_counter=counter,
            hardware_ids=["acme-ecu-v2"],
            created=1_790_000_000,
        )
        return out.getvalue()

    v1, v2, v3 = image(1), image(2), image(3)
    names = sorted(PRESETS)[:2] if quick() else sorted(PRESETS)
    total_points = total_bricks = total_ops = 0
    start = time.perf_counter()
    for name in names:
        for erased in (0xFF, 0x00):
            geometry = PRESETS[name].with_erased(erased)
            geometry = geometry.with_slot_size(max(geometry.sector_size, 32 * 1024))
            config = DeviceConfig(geometry, (Component(MAIN, "acme-ecu-v2"),))

            def make(config: DeviceConfig = config) -> Device:
                return Device.in_memory(config, trust)

            for history, new, scenario in (([v1], v2, "update"), ([v1, v2], v3, "crash-loop")):
                report = campaign.run_campaign(make, history, new, scenario=scenario)
                total_points += report.fault_points
                total_bricks += report.bricks
                total_ops += report.operations
    elapsed = time.perf_counter() - start
    return [
        "| geometries x erased x scenarios | flash operations | fault points | bricks | time |",
        "|---|---|---|---|---|",
        f"| {len(names)} x 2 x 2 | {total_ops} | {total_points} | **{total_bricks}** "
        f"| {elapsed:.1f} s (one core) |",
        "",
        "Fault points: for every operation of the scenario, a power cut before it, a tear that "
        "leaves the rest old and a tear that leaves noise (8 KiB images, 32 KiB slots).",
    ]


def run(workdir: Path) -> str:
    _setup()
    lines = ["### Boot-time verification (in-memory flash, Ed25519)", ""]
    lines += _boot_times()
    lines += ["", "### The power-loss campaign (tests/device/test_fault_campaign.py, whole)", ""]
    lines += _campaign()
    return "\n".join(lines) + "\n"
