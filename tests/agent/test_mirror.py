"""Debian's nginx as an untrusted mirror of the repository: updates, Range resumes, other bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_fleet import Fleet
from helpers_nginx import Nginx
from otaguard.agent.state import Result
from otaguard.tools.faultproxy import FaultProxy, Faults

from .conftest import Car, Releases


@pytest.fixture
def mirror(fleet: Fleet, tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(fleet.repo_dir, tmp_path / "nginx")
    fleet.metadata_url = f"{server.url}/metadata/"
    fleet.targets_url = f"{server.url}/targets/"
    yield server
    server.stop()


def _image_requests(mirror: Nginx) -> list[tuple[int, str]]:
    return [(status, rng) for _m, uri, status, rng in mirror.requests() if uri.endswith(".img")]


def test_update_through_the_mirror(
    car: Car, fleet: Fleet, releases: Releases, mirror: Nginx
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    assert car.running_version() == "2.0.0"
    assert _image_requests(mirror) == [(206, f"bytes=0-{len(releases.v2) - 1}")]
    assert any(uri.endswith("timestamp.json") for _m, uri, _s, _r in mirror.requests())


def test_cut_connections_to_the_mirror_resume_with_range(
    car: Car, fleet: Fleet, releases: Releases, mirror: Nginx
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    faults = Faults(cut=1.0, max_offset=9000)  # every connection to the mirror is cut
    with FaultProxy(("127.0.0.1", mirror.port), faults, seed=11) as proxy:
        fleet.metadata_url = f"{proxy.url}/metadata/"
        fleet.targets_url = f"{proxy.url}/targets/"
        result = Result.FAILED
        for _ in range(10):
            result = car.cycle()
            if result is not Result.FAILED:
                break
    assert result is Result.UPDATED
    assert car.running_version() == "2.0.0"
    ranges = [rng for status, rng in _image_requests(mirror) if status == 206]
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges]
    assert len(starts) > 2 and starts == sorted(starts) and starts[-1] > 0  # resumed, forward


def test_other_bytes_on_the_mirror_are_refused(
    car: Car, fleet: Fleet, releases: Releases, mirror: Nginx
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    info = fleet.target_info(releases.v2_name)
    served = fleet.repo_dir / "targets" / "acme-ecu-v2" / f"{info.hashes['sha256']}.2.0.0.img"
    data = bytearray(served.read_bytes())
    data[5000] ^= 0x01
    served.write_bytes(bytes(data))
    before = car.flash()
    assert car.cycle() is Result.REFUSED
    assert car.flash() == before
    assert car.running_version() == "1.0.0"
