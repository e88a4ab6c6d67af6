"""A compromised server or mirror cannot make the agent install what the offline keys did not sign.

Each test plays one attack through the stand-in server (other bytes, another
director key, an image the repository does not hold, an older director or
repository version, an older image) and checks that the agent refuses it,
reports ``refused``, leaves the flash as it was, and does not try the same
offer again until the server changes its answer.
"""

from __future__ import annotations

import hashlib

from helpers_fleet import HW, Fleet
from helpers_range import Fault
from otaguard.agent.state import Result
from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.repo.director import EcuInstruction

from .conftest import Car, Releases


def _served(fleet: Fleet, name: str) -> str:
    info = fleet.target_info(name)
    directory, _, base = name.rpartition("/")
    return f"/targets/{directory}/{info.hashes['sha256']}.{base}"


def _refused(car: Car, fleet: Fleet, check: str) -> None:
    before = car.flash()
    assert car.cycle() is Result.REFUSED
    assert car.flash() == before  # not one flash write
    refusals = [e for e in fleet.events if e["kind"] == "refused"]
    assert refusals and refusals[-1]["check"] == check, fleet.events
    assert refusals[-1]["failure"] == "deterministic"
    assert car.cycle() is Result.UP_TO_DATE  # the same offer is not tried again ...
    assert fleet.requests[-1][2] == 304  # ... the server's answer has not changed


def test_other_bytes_from_the_mirror(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    evil = bytearray(releases.v2)
    evil[-100] ^= 0xFF  # same length, one byte of the signature block
    fleet.server.fault(_served(fleet, releases.v2_name), Fault(other_bytes=bytes(evil), times=-1))
    _refused(car, fleet, "repository")
    assert not any((car.dir / "agent" / "downloads").iterdir())  # refused bytes are not kept


def test_director_signed_by_another_key(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.director_signers = [KeySigner(generate_private_key(KeyType.ED25519))]
    fleet.assign(car.device_id, releases.v2_name)
    _refused(car, fleet, "signature")
    assert not any("/targets/" in p for p, _ in fleet.server.log)  # nothing downloaded


def test_director_names_an_image_the_repository_does_not_hold(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    rogue = fleet.image("9.0.0", 9, b"rogue firmware" * 100)  # signed by the release key!
    fleet.extra_instructions = [
        EcuInstruction(
            f"{HW}/9.0.0.img",
            len(rogue),
            {"sha256": hashlib.sha256(rogue).hexdigest()},
            {"main": HW},
            9,
        )
    ]
    fleet.assign(car.device_id, releases.v1_name)
    _refused(car, fleet, "director-only")


def test_director_rollback_is_refused(car: Car, fleet: Fleet, releases: Releases) -> None:
    car.cycle()
    fleet.version_override = 7
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    fleet.version_override = 3  # an older director answer, however fresh its nonce
    fleet.assign(car.device_id, releases.v1_name)
    _refused(car, fleet, "rollback")


def test_older_image_is_refused_by_the_device_before_any_write(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    car.cycle()
    fleet.assign(car.device_id, releases.v2_name)
    assert car.cycle() is Result.UPDATED
    fleet.assign(car.device_id, releases.v1_name)  # signed, in the repository, but older
    _refused(car, fleet, "security-counter")
    assert car.running_version() == "2.0.0"


def test_repository_metadata_rollback_by_the_mirror(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    old_timestamp = (fleet.repo_dir / "metadata" / "timestamp.json").read_bytes()
    car.cycle()  # the agent trusts this timestamp version now ...
    fleet.publish(releases.v3_name, releases.v3)  # ... then the repository moves on
    car.cycle()
    fleet.server.fault("/metadata/timestamp.json", Fault(other_bytes=old_timestamp, times=-1))
    fleet.assign(car.device_id, releases.v2_name)
    _refused(car, fleet, "repository")
