"""The agent's cycle over real HTTP: enrol, check in, update (full, delta), confirm, report."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers_fleet import DeviceCa, Fleet
from otaguard.agent.state import Phase, Result
from otaguard.agent.store import AgentDir, provision
from otaguard.errors import MalformedError, SignatureError, UsageError

from .conftest import Car, Releases, make_car

UPDATE = ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]


def _state(car: Car) -> dict:  # type: ignore[type-arg]
    return json.loads((car.dir / "agent" / "state.json").read_bytes())  # type: ignore[no-any-return]


def test_enrols_then_up_to_date_then_304(car: Car, fleet: Fleet) -> None:
    assert car.cycle() is Result.UP_TO_DATE
    assert car.device_id in fleet.devices
    assert fleet.devices[car.device_id].state["ecus"][0]["version"] == "1.0.0"
    assert car.cycle() is Result.UP_TO_DATE
    assert fleet.requests[-1][2] == 304  # the second check-in names the answer it acted on


def test_full_then_delta_update(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    assert car.running_version() == "2.0.0"
    assert fleet.kinds() == UPDATE
    ecu = fleet.devices[car.device_id].state["ecus"][0]
    assert ecu["sha256"] == hashlib.sha256(releases.v2).hexdigest()
    assert (ecu["target"], ecu["boot"]) == (releases.v2_name, "confirmed")
    assert car.cycle() is Result.UP_TO_DATE

    fleet.publish(releases.v3_name, releases.v3)
    delta = fleet.release_delta(releases.v2, releases.v3, releases.v3_name, chunk_size=8192)
    fleet.assign(car.device_id, releases.v3_name)
    assert car.cycle() is Result.UPDATED
    assert car.running_version() == "3.0.0"
    fetched = [p for p, _r in fleet.server.log if "/targets/" in p]
    assert any(p.endswith(delta.rsplit("/", 1)[1]) for p in fetched)
    assert not any(p.endswith("3.0.0.img") for p in fetched)  # the delta, not the full image
    ecu = fleet.devices[car.device_id].state["ecus"][0]
    assert ecu["sha256"] == hashlib.sha256(releases.v3).hexdigest()
    assert ecu["target"] == delta
    assert car.cycle() is Result.UP_TO_DATE


def test_ecu_already_on_its_target_is_left_alone(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v1_name)  # what it already runs
    before = car.flash()
    assert car.cycle() is Result.UP_TO_DATE
    assert car.flash() == before and fleet.kinds() == []


def test_provisioning_never_trusts_on_first_use(
    fleet: Fleet, device_ca: DeviceCa, releases: Releases, tmp_path: Path
) -> None:
    other = make_car(fleet, device_ca, tmp_path, "VIN0002", releases.v1)
    anchors = AgentDir(other.dir)
    assert provision(other.dir, fleet.repo_root, fleet.director_root) is False  # same: no-op
    with pytest.raises(UsageError, match="other trust anchors"):
        provision(other.dir, fleet.repo_root, fleet.repo_root)
    assert anchors.director_root.read_bytes() == fleet.director_root
    third = make_car(fleet, device_ca, tmp_path, "VIN0003", releases.v1)
    shutil.rmtree(third.dir / "agent")
    with pytest.raises(UsageError, match="provision"):
        third.agent()  # no anchors: the agent does not start
    tampered = bytearray(fleet.director_root)
    tampered[tampered.index(b'"version"') + 10] ^= 1
    with pytest.raises((MalformedError, SignatureError)):
        provision(third.dir, fleet.repo_root, bytes(tampered))
    with pytest.raises(MalformedError):
        provision(third.dir, b"{}", fleet.director_root)
    assert not (third.dir / "agent" / "anchors").exists()


def test_state_file_is_validated_and_a_bad_one_set_aside(car: Car, fleet: Fleet) -> None:
    car.cycle()
    path = car.dir / "agent" / "state.json"
    state = _state(car)
    state["phase"] = "download"  # a download phase without a plan
    path.write_text(json.dumps(state))
    assert car.cycle() is Result.UP_TO_DATE
    assert (car.dir / "agent" / "state.json.bad").exists()
    assert _state(car)["phase"] == Phase.IDLE.value


def test_an_identity_key_in_an_hsm(
    fleet: Fleet, device_ca: DeviceCa, releases: Releases, tmp_path: Path, softhsm
) -> None:
    from otaguard.crypto.keys import KeyType
    from otaguard.crypto.pkcs11 import generate_pkcs11_key

    uri = softhsm["prefix"] + "vin-hsm-1" + softhsm["query"]
    generate_pkcs11_key(uri, KeyType.ECDSA_P256)
    car = make_car(fleet, device_ca, tmp_path, "VINHSM1", releases.v1, key=uri)
    assert (car.identity_dir / "key.uri").exists() and not (car.identity_dir / "key.pem").exists()
    assert car.cycle() is Result.UP_TO_DATE  # enrolled: every request signed in the token
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
