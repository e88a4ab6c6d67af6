"""The fault proxy, and many seeded updates through it: the verified image or a refusal, no worse.

Each run updates a fresh device from 1.0.0 to 2.0.0 through a proxy that cuts,
stalls and corrupts connections with its own seed. Whatever happens, the
device must end running either exactly the signed 2.0.0 (the bytes in its
slot are the release's) or still 1.0.0 with its flash as it was (the update
refused); anything else -- a third image, a corrupt slot, a device in
recovery -- fails the test. The counts are printed (``-s``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from helpers_fleet import DeviceCa, Fleet
from otaguard.agent.config import AgentConfig, Backoff, Failure
from otaguard.agent.state import Result
from otaguard.device.bootloader import boot
from otaguard.device.install import running_of
from otaguard.device.slots import extent_in
from otaguard.device.store import open_device
from otaguard.tools.faultproxy import FaultProxy, Faults

from .conftest import Releases, make_car

RUNS = 40
PROXY_CONFIG = AgentConfig(
    chunk_size=4096,
    read_timeout=0.5,
    connect_timeout=2.0,
    rate_grace=5.0,
    backoff={f: Backoff(base=0.0, jitter=0.0, attempts=10) for f in Failure if f.transient},
)


def _raw_get(address: tuple[str, int], path: str) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        parts = []
        try:
            while data := sock.recv(65536):
                parts.append(data)
        except ConnectionResetError:
            pass
        return b"".join(parts)


@pytest.fixture
def served(fleet: Fleet, releases: Releases) -> str:
    info = fleet.target_info(releases.v2_name)
    return f"/targets/acme-ecu-v2/{info.hashes['sha256']}.2.0.0.img"


def _upstream(fleet: Fleet) -> tuple[str, int]:
    return ("127.0.0.1", fleet.server.httpd.server_address[1])


def test_proxy_without_faults_is_transparent(fleet: Fleet, served: str) -> None:
    direct = _raw_get(_upstream(fleet), served)
    with FaultProxy(_upstream(fleet), Faults()) as proxy:
        assert _raw_get(proxy.address, served)[-20000:] == direct[-20000:]


def test_proxy_flips_one_byte_cuts_and_replays_by_seed(fleet: Fleet, served: str) -> None:
    direct = _raw_get(_upstream(fleet), served)
    body = direct.index(b"\r\n\r\n") + 4
    flips = Faults(flip=1.0, max_offset=len(direct))
    with FaultProxy(_upstream(fleet), flips, seed=3) as proxy:
        flipped = _raw_get(proxy.address, served)
        assert proxy.stats.flips == 1
    diff = [
        i for i, (a, b) in enumerate(zip(direct[body:], flipped[body:], strict=False)) if a != b
    ]
    header_changed = direct[:body] != flipped[:body]
    assert len(diff) + header_changed == 1
    with FaultProxy(_upstream(fleet), flips, seed=3) as proxy:
        assert _raw_get(proxy.address, served) == flipped  # the same seed, the same fault
    with FaultProxy(_upstream(fleet), Faults(cut=1.0, max_offset=len(direct)), seed=1) as proxy:
        cut = _raw_get(proxy.address, served)
        assert len(cut) < len(direct) and direct.startswith(cut)
        assert proxy.stats.cuts == 1


def test_proxy_stall_holds_the_answer(fleet: Fleet, served: str) -> None:
    faults = Faults(stall=1.0, stall_seconds=30.0, max_offset=100)
    with FaultProxy(_upstream(fleet), faults) as proxy:
        with socket.create_connection(proxy.address, timeout=0.5) as sock:
            sock.sendall(f"GET {served} HTTP/1.0\r\n\r\n".encode())
            with pytest.raises(TimeoutError):
                while sock.recv(65536):
                    pass
        assert proxy.stats.stalls == 1


def _slot_bytes(car_dir: Path) -> tuple[str, bytes]:
    with open_device(car_dir) as device:
        result = boot(device)
        running = running_of(result)
        assert running is not None, "the device must never end in recovery"
        region = device.config.layout.slot(running.slot, "main")
        length = extent_in(device.flash, region)
        return running.slot, device.flash.read(region.offset, length)


def test_many_seeded_runs_end_with_the_verified_image_or_a_refusal(
    fleet: Fleet, device_ca: DeviceCa, releases: Releases, tmp_path: Path
) -> None:
    faults = Faults(cut=0.6, stall=0.1, flip=0.1, max_offset=6_000, stall_seconds=2.0)
    outcomes = {"updated": 0, "refused": 0}
    injected = {"connections": 0, "cuts": 0, "stalls": 0, "flips": 0}
    cycles = 0
    checks: list[str] = []
    started = time.monotonic()
    for seed in range(RUNS):
        car = make_car(fleet, device_ca, tmp_path, f"SEED{seed:03d}", releases.v1)
        car.cycle()  # enrolled over a clean connection
        fleet.assign(car.device_id, releases.v2_name)
        with FaultProxy(_upstream(fleet), faults, seed=seed) as proxy:
            car.fleet = _Via(fleet, proxy.url)  # type: ignore[assignment]
            result = Result.FAILED
            for _ in range(8):  # a failed cycle (retries spent) is followed by another
                cycles += 1
                result = car.cycle(config=PROXY_CONFIG)
                if result in (Result.UPDATED, Result.REFUSED):
                    break
            for key, value in proxy.stats.as_dict().items():
                injected[key] += value
        car.fleet = fleet
        _slot, image = _slot_bytes(car.dir)
        if result is Result.UPDATED:
            assert image == releases.v2, seed  # exactly the signed bytes
            outcomes["updated"] += 1
        else:
            assert result is Result.REFUSED, (seed, result)
            assert image == releases.v1, seed  # untouched
            outcomes["refused"] += 1
            checks.append(car.refusal())
    print(
        f"\nfault proxy: {RUNS} seeded runs in {time.monotonic() - started:.0f} s, "
        f"{cycles} cycles: {outcomes['updated']} updated to the identical verified image, "
        f"{outcomes['refused']} refused ({', '.join(checks)}), 0 corrupt installs; "
        f"faults injected: {injected}"
    )
    assert outcomes["updated"] + outcomes["refused"] == RUNS
    assert outcomes["updated"] >= RUNS // 2
    assert injected["cuts"] >= RUNS and injected["flips"] > 0 and injected["stalls"] > 0


class _Via:
    """The fleet as seen through the proxy (only its URL differs)."""

    def __init__(self, fleet: Fleet, url: str) -> None:
        self._fleet = fleet
        self.url = url

    def __getattr__(self, name: str) -> object:
        return getattr(self._fleet, name)
