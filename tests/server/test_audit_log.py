"""The server's audit log: every security-relevant action leaves its entry (who, what), a
refused or rolled-back action leaves none, and the log served by the server verifies, its
proofs checked by an implementation independent of ours (sigstore-python's)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from helpers_audit import sigstore_inclusion
from otaguard.audit.merkle import verify_consistency
from otaguard.audit.note import b64decode_strict
from otaguard.audit.records import software_id
from otaguard.pki.issue import Revocation, build_crl
from otaguard.server.client import FleetClient, FleetRefused
from server.helpers_audit_log import (
    audit_key,
    checkpoint,
    details,
    entries,
    of,
    verify_over_http,
)
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer

V1 = "acme-ecu-v2/1.0.0.img"

#: Every state-changing route and the action that records it. A route added without
#: an audit entry fails test_every_state_changing_route_is_audited: add it here once
#: it records its action (docs/server.md, "Audit log").
AUDITED = {
    ("POST", "/api/v1/tokens"): "token.create",
    ("DELETE", "/api/v1/tokens/{token_id}"): "token.revoke",
    ("POST", "/api/v1/enrollment-groups"): "group.create",
    ("PUT", "/api/v1/enrollment-groups/{name}/crl"): "group.crl",
    ("PUT", "/api/v1/artifacts/sha256/{sha256}"): "artifact.upload",
    ("POST", "/api/v1/releases"): "release.upload",
    ("POST", "/api/v1/deployments"): "deployment.create",
    ("POST", "/api/v1/devices/{device_id}/revoke"): "device.revoke",
    ("POST", "/api/v1/device/enroll"): "device.enroll",
    ("POST", "/api/v1/device/state"): "device.state",
    ("POST", "/api/v1/device/events"): "device.install",
    ("POST", "/api/v1/audit/submissions"): "audit.submit",
    ("POST", "/api/v1/campaigns"): "campaign.create",
    ("POST", "/api/v1/campaigns/{campaign_id}/approve"): "campaign.approve",
    ("POST", "/api/v1/campaigns/{campaign_id}/start"): "campaign.start",
    ("POST", "/api/v1/campaigns/{campaign_id}/pause"): "campaign.pause",
    ("POST", "/api/v1/campaigns/{campaign_id}/resume"): "campaign.resume",
    ("POST", "/api/v1/campaigns/{campaign_id}/halt"): "campaign.kill",
    ("POST", "/api/v1/campaigns/{campaign_id}/cancel"): "campaign.cancel",
}
#: state-changing routes that change nothing an auditor asks about
NOT_AUDITED = {
    ("POST", "/api/v1/audit/checkpoint"),  # signs what is there; stored
    ("POST", "/api/v1/device/health"),  # telemetry sums; the decisions on them are audited
}


def test_every_state_changing_route_is_audited(live: LiveServer) -> None:
    paths = live.client().get("/openapi.json").json()["paths"]
    changing = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    }
    assert changing - NOT_AUDITED == set(AUDITED)


@pytest.fixture
def fleet(live: LiveServer) -> FleetClient:
    with FleetClient(live.url, live.admin_token) as client:
        yield client


@pytest.fixture
def published(live: LiveServer, fleet: FleetClient, tmp_path: Path) -> OfflineRepo:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add(V1, b"one " * 1000)
    repo.sign()
    repo.upload(fleet)
    return repo


def test_first_start_records_its_keys_and_the_admin_token(live: LiveServer) -> None:
    found = entries(live)
    generated = of(found, "key.generate")
    assert sorted(details(e)["role"] for e in generated) == [
        "audit",
        "director",
        "snapshot",
        "timestamp",
    ]
    assert {e.event.actor.kind for e in generated} == {"system"}
    (admin,) = of(found, "token.create")
    assert (admin.event.subject, details(admin)["role"]) == ("admin", "admin")
    assert [e.index for e in found] == list(range(len(found)))


def test_operator_changes_record_who_and_what(
    live: LiveServer, fleet: FleetClient, published: OfflineRepo
) -> None:
    made = live.admin().post("/api/v1/tokens", json={"role": "operator", "name": "ops"}).json()
    ops = FleetClient(live.url, made["token"])
    ca = DeviceCa.make()
    ops.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={"m": "x"})
    device = Device(live.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    ops.deploy(V1, group="eu")
    ops.revoke_device("VIN0001")
    assert live.admin().delete(f"/api/v1/tokens/{made['id']}").status_code == 200
    ops.close()
    found = entries(live)
    (created,) = [e for e in of(found, "token.create") if e.event.subject == "ops"]
    assert created.event.actor.id == "admin" and created.event.actor.role == "admin"
    assert details(created)["token_id"] == made["id"]
    assert made["token"] not in str([e.event.details for e in found])  # never the secret
    (group,) = of(found, "group.create")
    assert (group.event.actor.id, group.event.actor.role) == ("ops", "operator")
    assert details(group)["operator_token"] == made["id"]
    assert details(group)["tags"] == {"m": "x"}
    (deployment,) = of(found, "deployment.create")
    assert deployment.event.subject == V1
    assert (details(deployment)["group"], details(deployment)["assignments"]) == ("eu", 1)
    (assigned,) = of(found, "device.assign")
    assert assigned.event.subject == "VIN0001"
    assert details(assigned) | {"ecus": ["main"], "target": V1} == details(assigned)
    assert details(assigned)["deployment"] == details(deployment)["deployment"]
    (revoked,) = of(found, "device.revoke")
    assert (revoked.event.subject, revoked.event.actor.id) == ("VIN0001", "ops")
    (token_revoked,) = of(found, "token.revoke")
    assert token_revoked.event.subject == "ops"


def test_a_release_records_its_images_signatures_and_the_repository_signature(
    live: LiveServer, published: OfflineRepo
) -> None:
    found = entries(live)
    (artifact,) = of(found, "artifact.upload")
    (upload,) = of(found, "release.upload")
    assert upload.event.subject == V1
    info = details(upload)
    assert info["sha256"] == details(artifact)["sha256"]
    assert info["hardware_ids"] == [HW]
    assert (info["version"], info["security_counter"]) == ("1.0.0", 1)
    assert info["signed_by"]["threshold"] == 1 and len(info["signed_by"]["keys"]) == 1
    (signed,) = of(found, "repo.sign")
    assert signed.event.subject == "repository"
    assert (details(signed)["snapshot_version"], details(signed)["timestamp_version"]) == (1, 1)
    assert set(details(signed)["online_keys"]) == {"snapshot", "timestamp"}


def test_a_refused_release_is_recorded_with_its_reason_and_publishes_nothing(
    live: LiveServer, fleet: FleetClient, tmp_path: Path
) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add(V1, b"one " * 1000)
    repo.sign("root")  # not the targets key
    with pytest.raises(FleetRefused) as refused:
        repo.upload(fleet)
    assert refused.value.check == "unsigned"
    found = entries(live)
    (refusal,) = of(found, "release.refuse")
    assert details(refusal)["check"] == "unsigned"
    assert details(refusal)["targets"]["items"] == [V1]
    assert of(found, "release.upload") == [] and of(found, "repo.sign") == []


def test_an_action_that_did_not_happen_has_no_entry(
    live: LiveServer, fleet: FleetClient, published: OfflineRepo
) -> None:
    ca = DeviceCa.make()
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    before = entries(live)
    with pytest.raises(FleetRefused):
        fleet.deploy("acme-ecu-v2/9.9.9.img", group="eu")  # unknown target: 422
    answer = live.admin().post(
        "/api/v1/enrollment-groups",
        json={"name": "eu", "ca_pem": ca.ca_pem, "hardware_id": HW, "region": "eu"},
    )
    assert answer.status_code == 409
    assert live.admin().delete("/api/v1/tokens/999").status_code == 404
    assert live.admin().post("/api/v1/devices/NOPE/revoke").status_code == 404
    assert entries(live) == before


def test_an_action_whose_entry_cannot_be_written_does_not_happen(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is written in the action's transaction: if it fails, so does the action."""
    from otaguard.server.services import audit

    def broken(*args: object, **kwargs: object) -> int:
        raise OSError("the log's disk is full")

    monkeypatch.setattr(audit, "record_all", broken)
    answer = live.admin().post("/api/v1/tokens", json={"role": "auditor", "name": "ghost"})
    assert answer.status_code == 500
    monkeypatch.undo()
    names = [t["name"] for t in live.admin().get("/api/v1/tokens").json()]
    assert "ghost" not in names
    assert not [e for e in entries(live) if e.event.subject == "ghost"]


def test_device_actions_are_recorded(live: LiveServer, fleet: FleetClient) -> None:
    ca = DeviceCa.make()
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    device = Device(live.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    assert device.enroll().status_code == 200  # the same again: nothing new happened
    stranger = Device(live.url, DeviceCa.make("Other").issue("VIN0002"))
    assert stranger.enroll().status_code == 403
    running = [ecu_state(target=V1, version="1.0.0", security_counter=1, sha256="ab" * 32)]
    assert device.post_state(running).status_code == 200
    assert device.post_state(running).status_code == 200  # unchanged: no second entry
    events = [
        _event("download-started"),
        _event("installed", target=V1),
        _event("refused", result="failed", failure="deterministic", check="signature"),
    ]
    assert device.request("POST", "/api/v1/device/events", {"events": events}).status_code == 200
    assert device.request("POST", "/api/v1/device/events", {"events": events}).status_code == 200
    found = entries(live)
    (enrolled,) = of(found, "device.enroll")
    assert (enrolled.event.subject, enrolled.event.actor.kind) == ("VIN0001", "device")
    assert details(enrolled)["group"] == "eu"
    assert details(enrolled)["ecus"] == [{"serial": "main", "hardware_id": HW}]
    (refused,) = of(found, "enroll.refuse")
    assert refused.event.subject == "VIN0002" and details(refused)["status"] == 403
    (state,) = of(found, "device.state")
    assert details(state)["ecus"][0]["version"] == "1.0.0"
    assert details(state)["software_id"] == software_id(details(state)["ecus"])
    (installed,) = of(found, "device.install")
    assert (details(installed)["target"], details(installed)["result"]) == (V1, "ok")
    (refusal,) = of(found, "device.refuse")
    assert details(refusal)["check"] == "signature"
    assert not [e for e in found if details(e).get("kind") == "download-started"]


def _event(kind: str, **fields: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "kind": kind,
        "ecu": "main",
        "result": "ok",
        **fields,
    }


def test_crl_upload_records_the_devices_it_revoked(live: LiveServer, fleet: FleetClient) -> None:
    ca = DeviceCa.make()
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    identity = ca.issue("VIN0001")
    assert Device(live.url, identity).enroll().status_code == 201
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = build_crl(
        ca.ca,
        [Revocation(identity.chain[0].serial_number, now, "key-compromise")],
        this_update=now,
        next_update=now + dt.timedelta(days=7),
        number=1,
    )
    answer = live.admin().put(
        "/api/v1/enrollment-groups/eu/crl",
        json={"crl_pem": crl.public_bytes(Encoding.PEM).decode()},
    )
    assert answer.status_code == 200, answer.text
    found = entries(live)
    (uploaded,) = of(found, "group.crl")
    assert details(uploaded)["revoked_devices"] == ["VIN0001"]
    assert details(uploaded)["crl_number"] == "1"
    (revoked,) = of(found, "device.revoke")
    assert details(revoked)["reason"] == "crl"


def test_the_served_log_verifies_and_its_proofs_check_independently(
    live: LiveServer, fleet: FleetClient, published: OfflineRepo
) -> None:
    auditor = live.token("auditor", "aud")
    first = checkpoint(live, auditor)
    fleet.create_group(
        name="eu", ca_pem=DeviceCa.make().ca_pem, hardware_id=HW, region="eu", tags={}
    )
    second = checkpoint(live, auditor)
    key = audit_key(live.config.data_dir)
    verified = verify_over_http(live.url, auditor, key, first["note"].encode())
    assert verified.checkpoint.size == second["tree_size"] > first["tree_size"]
    client = live.client(auditor)
    root = b64decode_strict(second["root_hash"])
    for index in range(second["tree_size"]):
        proof = client.get("/api/v1/audit/proof/inclusion", params={"index": index}).json()
        path = [b64decode_strict(h) for h in proof["inclusion_path"]]
        sigstore_inclusion(proof["entry"].encode(), index, proof["tree_size"], path, root)
    consistency = client.get(
        "/api/v1/audit/proof/consistency", params={"old_size": first["tree_size"]}
    ).json()
    verify_consistency(
        first["tree_size"],
        second["tree_size"],
        [b64decode_strict(h) for h in consistency["consistency_path"]],
        b64decode_strict(first["root_hash"]),
        root,
    )
    older = client.get(
        "/api/v1/audit/proof/inclusion", params={"index": 0, "tree_size": first["tree_size"]}
    ).json()
    assert older["root_hash"] == first["root_hash"]
    assert (
        client.get("/api/v1/audit/proof/inclusion", params={"index": 0, "tree_size": 1}).status_code
        == 404
    )  # no checkpoint of that size was signed
