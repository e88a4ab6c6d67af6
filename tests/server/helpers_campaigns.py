"""A small fleet on a live server, a published release 2.0.0, and campaign helpers.

Devices are real enrolled devices with their own keys; every request is signed like the
agent's. The evaluator is ticked directly (``campaign_eval.tick``) with an explicit time,
on the server's own database, so a test decides when a tick happens.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from otaguard.rollout import state_from_dict
from otaguard.server.client import FleetClient
from otaguard.server.db import Database
from otaguard.server.models import Campaign
from otaguard.server.services import campaign_eval
from otaguard.server.services.campaign_select import wave_of
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_release import OfflineRepo

V1 = "acme-ecu-v2/1.0.0.img"
V2 = "acme-ecu-v2/2.0.0.img"

#: small waves and thresholds that a few dozen devices can show either way
POLICY = """
[waves]
fractions = [0.5, 1.0]
min_devices = 1
min_soak_s = 0.0

[advance]
min_confirmed = 3
require_health = false

[halt]
failure_threshold = 0.5
acceptable_failure_rate = 0.05
methods = ["sprt"]
min_sample = 3
deadline_s = 600.0

[health]
min_devices = 3
"""


def director_targets(answer: dict[str, Any]) -> list[str]:
    data = json.loads(base64.b64decode(answer["director"]))
    return sorted(data["signed"]["targets"])


@dataclass
class Fleet:
    base_url: str
    admin: FleetClient
    devices: list[Device]
    db: Database
    etags: dict[str, str] = field(default_factory=dict)

    def by_id(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.id == device_id)

    def check_in(self, device: Device, *, etag: bool = False) -> httpx.Response:
        answer = device.check_in(self.etags.get(device.id) if etag else None)
        assert answer.status_code in (200, 304), answer.text
        self.etags[device.id] = answer.headers["ETag"]
        return answer

    def offered(self, campaign_id: str) -> dict[str, int]:
        """Every device's check-in; those whose answer offers the campaign, with their wave."""
        out = {}
        for device in self.devices:
            body = self.check_in(device).json()
            ours = body["campaign"] and body["campaign"]["id"] == campaign_id
            if ours and V2 in director_targets(body) and not body["actions"]:
                out[device.id] = body["campaign"]["wave"]
        return out

    def waves(self, campaign_id: str) -> dict[str, int]:
        """Each device's wave, from the campaign's cohort key (what the server computes)."""
        with self.db.reading() as session:
            row = session.get(Campaign, campaign_id)
            assert row is not None
            key, plan = bytes.fromhex(row.cohort_key), state_from_dict(row.state).plan
        return {d.id: wave_of(key, campaign_id, d.id, plan) for d in self.devices}

    def tick(self, now: float) -> list[campaign_eval.Ticked]:
        return campaign_eval.tick(self.db, now)[0]


def make_fleet(
    base_url: str,
    admin_token: str,
    db_url: str,
    online_keys: Path,
    tmp: Path,
    n: int,
    *,
    old: int = 0,
    replaces: Sequence[str] = (),
) -> Fleet:
    """``n`` devices running 1.0.0 (the last ``old`` of them 0.9.0), release 2.0.0 published
    (declaring ``replaces`` as the versions it may replace)."""
    admin = FleetClient(base_url, admin_token)
    repo = OfflineRepo.init(tmp, online_keys)
    v1 = repo.add(V1, b"one " * 2000)
    repo.add(V2, b"two " * 2000, version="2.0.0", counter=2, replaces=replaces)
    repo.sign()
    repo.upload(admin)
    ca = DeviceCa.make()
    admin.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={"m": "x"})
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()
    devices = []
    for i in range(n):
        device = Device(base_url, ca.issue(f"VIN{i:04d}"))
        assert device.enroll().status_code == 201
        version = "0.9.0" if i >= n - old else "1.0.0"
        state = [ecu_state(target=V1, version=version, sha256=digest)]
        assert device.post_state(state).status_code == 200
        devices.append(device)
    return Fleet(base_url, admin, devices, Database(db_url))


def token(admin: FleetClient, role: str, name: str) -> FleetClient:
    made = admin.create_token(role, name)
    return FleetClient(str(admin._http.base_url), made["token"])


def event(kind: str, campaign: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "kind": kind,
        "ecu": "main",
        "target": V2,
        "result": "failed" if "failed" in kind or kind in ("refused", "reverted") else "ok",
        "campaign": campaign,
        **fields,
    }


def report(device: Device, *events: dict[str, Any]) -> None:
    answer = device.request("POST", "/api/v1/device/events", {"events": list(events)})
    assert answer.status_code == 200, answer.text


def health(device: Device, campaign: str | None, **counts: int) -> None:
    body = {"campaign": campaign, "window_s": 3600.0, "counts": counts, "flags": {}, "metrics": {}}
    answer = device.request("POST", "/api/v1/device/health", body)
    assert answer.status_code == 200, answer.text
