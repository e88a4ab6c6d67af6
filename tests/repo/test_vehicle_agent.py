"""The vehicle agent end to end: a real TUF repository over HTTP, the director, a device."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from helpers import cached_key, make_image
from otaguard.agent.vehicle import CheckIn, apply_plan, plan_update
from otaguard.crypto.keys import KeyType, key_id_bytes
from otaguard.crypto.signer import KeySigner
from otaguard.device.bootloader import boot
from otaguard.device.geometry import PRESETS
from otaguard.device.install import running_of
from otaguard.device.model import MAIN, Component, Device, DeviceConfig
from otaguard.device.trust import DeviceTrust
from otaguard.errors import DirectorOnlyError, MismatchError, RepositoryRejectedError
from otaguard.repo.client import TufClient
from otaguard.repo.director import EcuInstruction, director_root, director_targets, instruction_for
from otaguard.repo.fetcher import HttpxFetcher
from otaguard.repo.uptane import Vehicle, load_director_root

HW = "acme-ecu-v2"
VIN = "VIN-0001"
SERIAL = "ecu-main-1"
VEHICLE = Vehicle(VIN, {SERIAL: HW})
DIRECTOR = [KeySigner(cached_key(KeyType.ED25519, 40))]
RELEASE = cached_key(KeyType.ED25519, 41)


def _device() -> Device:
    pub = RELEASE.public_key()
    trust = DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,))
    geometry = PRESETS["nor-4k"].with_slot_size(32 * 1024)
    return Device.in_memory(DeviceConfig(geometry, (Component(MAIN, HW),)), trust)


@pytest.fixture
def world(repo, tmp_path: Path):
    image = make_image(os.urandom(8000), [RELEASE], version="2.0.0", security_counter=2)
    info = repo.add_target("app-2.0.0.img", image)
    info.unrecognized_fields["custom"] = {"hardware_ids": [HW], "security_counter": 2}
    repo.publish()
    meta = tmp_path / "agent-meta"
    meta.mkdir()
    (meta / "root.json").write_bytes(repo.initial_root)
    fetcher = HttpxFetcher()
    client = TufClient(meta, repo.metadata_url, fetcher)
    now = dt.datetime.now(dt.UTC)
    root = load_director_root(
        director_root(DIRECTOR, threshold=1, version=1, expires=now + dt.timedelta(days=30))
    )
    yield {"repo": repo, "client": client, "info": info, "root": root, "now": now, "tmp": tmp_path}
    fetcher.close()


def _director(world, instructions: list[EcuInstruction], nonce: str = "n-1") -> bytes:
    return director_targets(
        device_id=VIN,
        nonce=nonce,
        instructions=instructions,
        version=1,
        expires=world["now"] + dt.timedelta(hours=1),
        signers=DIRECTOR,
    )


def _check_in(world, nonce: str = "n-1") -> CheckIn:
    return CheckIn(VEHICLE, nonce, world["now"])


def _plan(world, director: bytes):
    return plan_update(world["client"], director, world["root"], _check_in(world), {SERIAL: MAIN})


def test_agent_installs_what_both_repositories_agree_on(world) -> None:
    device = _device()
    director = _director(world, [instruction_for(world["info"], {SERIAL: HW})])
    plan = plan_update(world["client"], director, world["root"], _check_in(world), {SERIAL: MAIN})
    result = apply_plan(
        plan,
        world["client"],
        device,
        target_base_url=world["repo"].targets_url,
        download_dir=world["tmp"] / "downloads",
        running=None,
    )
    assert result is not None and result.images[0].metadata.version == "2.0.0"
    booted = running_of(boot(device))
    assert booted is not None and booted.slot == result.slot


def test_director_only_target_never_reaches_the_device(world) -> None:
    device = _device()
    before = device.flash.snapshot()
    rogue = make_image(b"rogue" * 100, [RELEASE], version="9.0.0", security_counter=9)
    import hashlib

    item = EcuInstruction(
        "rogue-9.0.0.img", len(rogue), {"sha256": hashlib.sha256(rogue).hexdigest()}, {SERIAL: HW}
    )
    with pytest.raises(DirectorOnlyError):
        plan_update(
            world["client"],
            _director(world, [item]),
            world["root"],
            _check_in(world),
            {SERIAL: MAIN},
        )
    assert device.flash.snapshot() == before


def test_director_disagreeing_with_repository_is_refused(world) -> None:
    info = world["info"]
    item = EcuInstruction(info.path, info.length, {"sha256": "ab" * 32}, {SERIAL: HW}, 2)
    with pytest.raises(MismatchError):
        plan_update(
            world["client"],
            _director(world, [item]),
            world["root"],
            _check_in(world),
            {SERIAL: MAIN},
        )


def test_malicious_mirror_bytes_are_refused_before_install(world) -> None:
    device = _device()
    before = device.flash.snapshot()
    director = _director(world, [instruction_for(world["info"], {SERIAL: HW})])
    plan = plan_update(world["client"], director, world["root"], _check_in(world), {SERIAL: MAIN})
    served = next(world["repo"].targets_dir.glob("*.app-2.0.0.img"))
    data = bytearray(served.read_bytes())
    data[100] ^= 1
    served.write_bytes(bytes(data))
    with pytest.raises(RepositoryRejectedError):
        apply_plan(
            plan,
            world["client"],
            device,
            target_base_url=world["repo"].targets_url,
            download_dir=world["tmp"] / "downloads",
            running=None,
        )
    assert device.flash.snapshot() == before
    assert not any((world["tmp"] / "downloads").glob("*app*"))


def test_wrong_device_key_refused_at_install_even_if_repositories_agree(
    world, tmp_path: Path
) -> None:
    """Defence in depth: the device's OTP anchors still decide after TUF and the director agree."""
    from otaguard.errors import UnknownKeyError

    other = cached_key(KeyType.ED25519, 42)
    pub = other.public_key()
    geometry = PRESETS["nor-4k"].with_slot_size(32 * 1024)
    device = Device.in_memory(
        DeviceConfig(geometry, (Component(MAIN, HW),)),
        DeviceTrust(frozenset({key_id_bytes(pub)}), keys=(pub,)),
    )
    director = _director(world, [instruction_for(world["info"], {SERIAL: HW})])
    plan = plan_update(world["client"], director, world["root"], _check_in(world), {SERIAL: MAIN})
    with pytest.raises(UnknownKeyError):
        apply_plan(
            plan,
            world["client"],
            device,
            target_base_url=world["repo"].targets_url,
            download_dir=tmp_path / "dl",
            running=None,
        )


def test_network_failure_is_not_reported_as_an_attack(world, hostile) -> None:
    """A dead mirror is a transport error (retry later); a hostile one is refused by its cap."""
    from otaguard.errors import RejectedError, TransportError
    from otaguard.repo.fetcher import LengthExceededError

    device = _device()
    before = device.flash.snapshot()
    director = _director(world, [instruction_for(world["info"], {SERIAL: HW})])
    plan = _plan(world, director)
    served = next(world["repo"].targets_dir.glob("*.app-2.0.0.img"))
    apply = {
        "client": world["client"],
        "device": device,
        "download_dir": world["tmp"] / "downloads",
        "running": None,
    }
    with pytest.raises(TransportError) as dead:
        apply_plan(plan, target_base_url=f"{world['repo'].url}/nowhere/", **apply)
    assert not isinstance(dead.value, RejectedError)
    world["repo"].overrides[f"/targets/{served.name}"] = hostile["endless"]
    with pytest.raises(LengthExceededError) as endless:
        apply_plan(plan, target_base_url=world["repo"].targets_url, **apply)
    assert isinstance(endless.value, RejectedError) and endless.value.check == "endless-data"
    assert device.flash.snapshot() == before
