"""Uptane-style director: every check that can refuse, refusing; reports signed by the ECU."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import TargetFile

from helpers import cached_key
from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import KeySigner
from otaguard.errors import (
    DirectorOnlyError,
    FreezeError,
    HardwareIdError,
    MalformedError,
    MetadataRollbackError,
    MismatchError,
    OtaguardError,
    PartialBundleError,
    ReplayError,
    SignatureError,
    UnknownEcuError,
)
from otaguard.repo.director import EcuInstruction, director_root, director_targets, instruction_for
from otaguard.repo.uptane import (
    Vehicle,
    cross_check,
    load_director_root,
    make_version_report,
    verify_director,
    verify_version_report,
)

NOW = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=1)
VIN = "WAUZZZ8V5KA000001"
VEHICLE = Vehicle(VIN, {"ecu-main-1": "acme-ecu-v2", "ecu-radio-7": "acme-radio-v1"})
DIRECTOR = [
    KeySigner(cached_key(KeyType.ECDSA_P256, 30)),
    KeySigner(cached_key(KeyType.ED25519, 30)),
]


def _target(name: str, data: bytes, hw: str, counter: int, **custom: object) -> TargetFile:
    return TargetFile(
        len(data),
        {"sha256": hashlib.sha256(data).hexdigest()},
        name,
        {"custom": {"hardware_ids": [hw], "security_counter": counter, **custom}},
    )


APP = _target("app-2.0.0.img", b"app" * 100, "acme-ecu-v2", 2, requires=["radio-1.1.0.img"])
RADIO = _target("radio-1.1.0.img", b"radio" * 50, "acme-radio-v1", 5, requires=["app-2.0.0.img"])
LONE = _target("lone-1.0.0.img", b"lone", "acme-ecu-v2", 1)
IMAGE_REPO = {t.path: t for t in (APP, RADIO, LONE)}


def _root(threshold: int = 1) -> bytes:
    return director_root(DIRECTOR, threshold=threshold, version=1, expires=LATER)


def _director(
    instructions: list[EcuInstruction],
    *,
    nonce: str = "n-1",
    version: int = 5,
    expires: dt.datetime = LATER,
    signers: list[KeySigner] | None = None,
    device_id: str = VIN,
) -> bytes:
    return director_targets(
        device_id=device_id,
        nonce=nonce,
        instructions=instructions,
        version=version,
        expires=expires,
        signers=DIRECTOR if signers is None else signers,
    )


BOTH = [
    instruction_for(APP, {"ecu-main-1": "acme-ecu-v2"}),
    instruction_for(RADIO, {"ecu-radio-7": "acme-radio-v1"}),
]


def _check(data: bytes, *, threshold: int = 1, nonce: str = "n-1", last: int = 0):
    root = load_director_root(_root(threshold))
    targets = verify_director(data, root, VEHICLE, nonce=nonce, now=NOW, last_version=last)
    return cross_check(targets, VEHICLE, IMAGE_REPO.get)


def test_agreeing_director_and_repository() -> None:
    result = _check(_director(BOTH), threshold=2)
    assert {(i.ecu_serial, i.target.path) for i in result} == {
        ("ecu-main-1", "app-2.0.0.img"),
        ("ecu-radio-7", "radio-1.1.0.img"),
    }


def test_director_signatures_and_threshold() -> None:
    attacker = [KeySigner(cached_key(KeyType.ED25519, 31))]
    with pytest.raises(SignatureError):
        _check(_director(BOTH, signers=attacker))
    with pytest.raises(SignatureError):
        _check(_director(BOTH, signers=DIRECTOR[:1]), threshold=2)
    data = json.loads(_director(BOTH))
    data["signed"]["version"] = 99  # tampered after signing
    with pytest.raises(SignatureError):
        _check(json.dumps(data).encode())


def test_freshness_checks() -> None:
    with pytest.raises(ReplayError, match="nonce"):
        _check(_director(BOTH, nonce="yesterday"))
    with pytest.raises(ReplayError, match="another vehicle"):
        _check(_director(BOTH, device_id="WAUZZZ-OTHER"))
    with pytest.raises(FreezeError):
        _check(_director(BOTH, expires=NOW - dt.timedelta(seconds=1)))
    with pytest.raises(MetadataRollbackError):
        _check(_director(BOTH, version=4), last=5)


def test_director_only_target_is_refused() -> None:
    fake = _target("backdoor.img", b"evil", "acme-ecu-v2", 99)
    with pytest.raises(DirectorOnlyError):
        _check(_director([instruction_for(fake, {"ecu-main-1": "acme-ecu-v2"})]))


@pytest.mark.parametrize("field", ["length", "hash", "counter"])
def test_mismatch_with_the_image_repository_is_refused(field: str) -> None:
    item = instruction_for(LONE, {"ecu-main-1": "acme-ecu-v2"})
    if field == "length":
        item = EcuInstruction(item.target, item.length + 1, item.hashes, item.ecus, 1)
    elif field == "hash":
        item = EcuInstruction(item.target, item.length, {"sha256": "00" * 32}, item.ecus, 1)
    else:
        item = EcuInstruction(item.target, item.length, item.hashes, item.ecus, 7)
    with pytest.raises(MismatchError):
        _check(_director([item]))


def test_wrong_hardware_and_unknown_ecu() -> None:
    with pytest.raises(HardwareIdError):  # the ECU is a radio, not a main ECU
        _check(_director([instruction_for(LONE, {"ecu-radio-7": "acme-ecu-v2"})]))
    with pytest.raises(HardwareIdError):  # the repository does not list this hardware
        _check(_director([instruction_for(LONE, {"ecu-radio-7": "acme-radio-v1"})]))
    with pytest.raises(UnknownEcuError):
        _check(_director([instruction_for(LONE, {"ecu-ghost-9": "acme-ecu-v2"})]))


def test_partial_bundle_is_refused() -> None:
    with pytest.raises(PartialBundleError, match=r"radio-1\.1\.0\.img"):
        _check(_director(BOTH[:1]))


def test_version_reports() -> None:
    ecu = KeySigner(cached_key(KeyType.ECDSA_P256, 32))
    report = make_version_report(
        ecu_serial="ecu-main-1",
        installed="app-2.0.0.img",
        hashes={"sha256": "ab" * 32},
        attacks_detected="",
        nonce="n-2",
        signer=ecu,
    )
    verified = verify_version_report(report, ecu.public_key, nonce="n-2")
    assert verified.installed == "app-2.0.0.img" and verified.ecu_serial == "ecu-main-1"
    with pytest.raises(ReplayError):
        verify_version_report(report, ecu.public_key, nonce="n-3")
    other = KeySigner(cached_key(KeyType.ECDSA_P256, 33))
    with pytest.raises(SignatureError):
        verify_version_report(report, other.public_key, nonce="n-2")
    tampered = json.loads(report)
    tampered["signed"]["attacks_detected"] = "none, honest"
    with pytest.raises(SignatureError):
        verify_version_report(json.dumps(tampered).encode(), ecu.public_key, nonce="n-2")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_parsers_raise_only_our_errors(data: bytes) -> None:
    root = load_director_root(_root())
    for call in (
        lambda: verify_director(data, root, VEHICLE, nonce="n", now=NOW),
        lambda: load_director_root(data),
        lambda: verify_version_report(data, DIRECTOR[0].public_key, nonce="n"),
    ):
        try:
            call()
        except OtaguardError:
            pass


def test_malformed_ecus_field() -> None:
    """Even the director's own keys cannot make us read a malformed ECU map."""
    item = EcuInstruction(
        "lone-1.0.0.img",
        LONE.length,
        dict(LONE.hashes),
        {"x": "y"},
        1,
        extra={"ecus": ["not", "a", "map"]},
    )
    with pytest.raises(MalformedError, match="no valid ECUs"):
        _check(_director([item]))
    with pytest.raises(MalformedError):
        _check(b"{not json")


def test_rsa_and_p384_director_keys() -> None:
    """Every key type signs director metadata that verifies (scheme names must match TUF's)."""
    signers = [KeySigner(cached_key(KeyType.RSA_3072)), KeySigner(cached_key(KeyType.ECDSA_P384))]
    root = load_director_root(director_root(signers, threshold=2, version=1, expires=LATER))
    data = director_targets(
        device_id=VIN, nonce="n", instructions=BOTH, version=1, expires=LATER, signers=signers
    )
    targets = verify_director(data, root, VEHICLE, nonce="n", now=NOW)
    assert len(cross_check(targets, VEHICLE, IMAGE_REPO.get)) == 2
