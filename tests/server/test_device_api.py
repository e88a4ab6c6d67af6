"""The device API over real HTTP: enrolment, signed requests and their refusals, state, events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from otaguard.protocol.signing import MAX_SKEW_SECONDS
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_server import LiveServer


@pytest.fixture
def ca() -> DeviceCa:
    return DeviceCa.make()


@pytest.fixture
def group(live: LiveServer, ca: DeviceCa) -> str:
    answer = live.admin().post(
        "/api/v1/enrollment-groups",
        json={
            "name": "eu-ecu",
            "ca_pem": ca.ca_pem,
            "hardware_id": HW,
            "region": "eu",
            "tags": {"model": "x1"},
        },
    )
    assert answer.status_code == 201, answer.text
    return "eu-ecu"


@pytest.fixture
def device(live: LiveServer, ca: DeviceCa, group: str) -> Iterator[Device]:
    dev = Device(live.url, ca.issue("VIN0001"))
    answer = dev.enroll()
    assert answer.status_code == 201, answer.text
    yield dev
    dev.close()


def test_enrolment_registers_the_device_with_its_groups_attributes(
    live: LiveServer, device: Device
) -> None:
    shown = live.admin().get(f"/api/v1/devices/{device.id}").json()
    assert shown["group"] == "eu-ecu"
    assert shown["region"] == "eu"
    assert shown["tags"] == {"model": "x1"}
    assert [e["serial"] for e in shown["ecus"]] == ["main"]
    again = device.enroll()
    assert again.status_code == 200
    assert again.json()["device_id"] == device.id


def test_enrolment_refusals(live: LiveServer, ca: DeviceCa, group: str) -> None:
    stranger = Device(live.url, DeviceCa.make("Other").issue("VIN0002"))
    answer = stranger.enroll()
    assert answer.status_code == 403, answer.text
    # a certificate for VIN0003 used to enrol as VIN0004
    thief = Device(live.url, ca.issue("VIN0003"))
    thief.identity.device_id = "VIN0004"
    answer = thief.enroll()
    assert (answer.status_code, answer.json()["error"]) == (403, "device-id")
    # proof of possession: signed by another key than the certificate's
    other = ca.issue("VIN0005")
    liar = Device(live.url, ca.issue("VIN0005"))
    answer = liar.enroll(signer=other.signer)
    assert (answer.status_code, answer.json()["error"]) == (401, "request-signature")
    # the same id enrolled again with another key
    first = Device(live.url, ca.issue("VIN0006"))
    assert first.enroll().status_code == 201
    assert Device(live.url, ca.issue("VIN0006")).enroll().status_code == 409
    # unsigned
    answer = live.client().post("/api/v1/device/enroll", json={"chain_pem": "x", "ecus": []})
    assert answer.status_code in (401, 422)


def test_unauthenticated_requests_are_401(live: LiveServer, device: Device) -> None:
    http = live.client()
    for method, path in (
        ("GET", "/api/v1/device/update"),
        ("POST", "/api/v1/device/state"),
        ("POST", "/api/v1/device/events"),
    ):
        answer = http.request(method, path, json={})
        assert answer.status_code == 401, (path, answer.text)


def test_replayed_state_change_is_refused(live: LiveServer, device: Device) -> None:
    assert device.post_state().status_code == 200
    replay = device.http.post(
        "/api/v1/device/state",
        content=b'{"ecus": [{"serial": "main", "hardware_id": "acme-ecu-v2"}]}',
        headers=device.last,
    )
    # the same headers over another body: the body hash is signed
    assert (replay.status_code, replay.json()["error"]) == (401, "request-signature")
    body = {"ecus": [ecu_state()]}
    nonce = "ab" * 16
    assert device.request("POST", "/api/v1/device/state", body, nonce=nonce).status_code == 200
    again = device.request("POST", "/api/v1/device/state", body, nonce=nonce)
    assert (again.status_code, again.json()["error"]) == (401, "request-replay")


def test_replayed_check_in_is_refused(live: LiveServer, device: Device) -> None:
    device.post_state()
    nonce = "cd" * 16
    assert device.check_in(nonce=nonce).status_code == 200
    again = device.check_in(nonce=nonce)
    assert (again.status_code, again.json()["error"]) == (401, "request-replay")


def test_stale_and_future_requests_are_refused(live: LiveServer, device: Device) -> None:
    # a minute past the window each way: a loaded machine's delay between signing and
    # checking must not bring a request back inside it
    for skew in (-MAX_SKEW_SECONDS - 60, MAX_SKEW_SECONDS + 60, -86400):
        answer = device.post_state(signed_at=int(time.time()) + skew)
        assert (answer.status_code, answer.json()["error"]) == (401, "request-time")


def test_cross_device_requests_are_refused(live: LiveServer, ca: DeviceCa, device: Device) -> None:
    other = Device(live.url, ca.issue("VIN0099"))
    assert other.enroll().status_code == 201
    # device A's key signing a request that names device B
    answer = device.post_state(device_id=other.id)
    assert (answer.status_code, answer.json()["error"]) == (401, "request-signature")
    # an unknown device id
    answer = device.post_state(device_id="VIN-NOBODY")
    assert (answer.status_code, answer.json()["error"]) == (401, "unknown-device")


def test_revoked_device_is_refused(live: LiveServer, device: Device) -> None:
    assert device.post_state().status_code == 200
    answer = live.admin().post(f"/api/v1/devices/{device.id}/revoke")
    assert answer.status_code == 200 and answer.json()["revoked_at"]
    for answer in (device.post_state(), device.check_in(), device.enroll()):
        assert (answer.status_code, answer.json()["error"]) == (403, "revoked")


def test_certificate_revoked_by_the_groups_crl_is_refused(
    live: LiveServer, ca: DeviceCa, device: Device
) -> None:
    import datetime as dt

    from cryptography.hazmat.primitives.serialization import Encoding

    from otaguard.pki.issue import Revocation, build_crl

    now = dt.datetime.now(dt.UTC)
    crl = build_crl(
        ca.ca,
        [Revocation(device.identity.chain[0].serial_number, now, "key-compromise")],
        number=1,
        this_update=now,
        next_update=now + dt.timedelta(days=7),
    )
    answer = live.admin().put(
        "/api/v1/enrollment-groups/eu-ecu/crl",
        json={"crl_pem": crl.public_bytes(Encoding.PEM).decode()},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_devices"] == [device.id]
    assert device.post_state().status_code == 403
    # a newly issued certificate from the same CA still enrols; the revoked serial does not
    fresh = Device(live.url, ca.issue("VIN0100"))
    assert fresh.enroll().status_code == 201


def test_state_then_check_in(live: LiveServer, device: Device) -> None:
    answer = device.check_in()
    assert (answer.status_code, answer.json()["error"]) == (409, "state-unknown")
    assert device.post_state().status_code == 200
    answer = device.check_in()
    assert answer.status_code == 200, answer.text
    etag = answer.headers["ETag"]
    assert answer.json()["etag"] == etag
    assert device.check_in(etag).status_code == 304
    # a new state: the ETag changes
    device.post_state([ecu_state(slot="b")])
    assert device.check_in(etag).status_code == 200


def test_state_for_an_unknown_ecu_is_422(device: Device) -> None:
    answer = device.post_state([ecu_state("other")])
    assert (answer.status_code, answer.json()["error"]) == (422, "unknown-ecu")


def test_events_are_idempotent_and_shown_in_history(live: LiveServer, device: Device) -> None:
    event = {
        "id": str(uuid.uuid4()),
        "time": "2026-12-03T10:00:00Z",
        "kind": "installed",
        "ecu": "main",
        "target": "acme/2.0.0.img",
        "result": "ok",
    }
    for _ in range(2):
        answer = device.request("POST", "/api/v1/device/events", {"events": [event]})
        assert answer.status_code == 200, answer.text
    history = live.admin().get(f"/api/v1/devices/{device.id}").json()["history"]
    assert [h["id"] for h in history] == [event["id"]]


def test_oversized_device_body_is_413(device: Device) -> None:
    body = {"ecus": [ecu_state(version="x" * 70_000)]}
    answer = device.request("POST", "/api/v1/device/state", body)
    assert answer.status_code == 413
