"""The server killed with SIGKILL at random moments while operators and a device keep it
busy: no acknowledged action without its entry, no entry without its action, and the log
(checked against every checkpoint signed before each kill) verifies afterwards."""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from otaguard.server.db import Database
from otaguard.server.models import ApiToken, DeviceEvent, EnrollmentGroup
from server.helpers_audit_log import audit_key, of, verify_over_http
from server.helpers_devices import HW, Device, DeviceCa
from server.helpers_process import ServerProcess

ROUNDS = 6
WORKERS = 3


def _busy(
    url: str, token: str, ca_pem: str, device: Device, stop: threading.Event, seed: int
) -> tuple[list[threading.Thread], dict[str, set[str]]]:
    """Workers making audited changes until the server dies; what was acknowledged."""
    done: dict[str, set[str]] = {"token": set(), "group": set(), "event": set()}
    lock = threading.Lock()

    def work(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        try:
            while not stop.is_set():
                name = f"w{seed}-{n}-{uuid.uuid4().hex[:8]}"
                kind = rng.choice(("token", "group", "event"))
                if kind == "token":
                    answer = http.post("/api/v1/tokens", json={"role": "auditor", "name": name})
                elif kind == "group":
                    body = {"name": name, "ca_pem": ca_pem, "hardware_id": HW, "region": "eu"}
                    answer = http.post("/api/v1/enrollment-groups", json=body)
                else:
                    name = str(uuid.uuid4())
                    event = {
                        "id": name,
                        "time": dt.datetime.now(dt.UTC).isoformat(),
                        "kind": "installed",
                        "ecu": "main",
                        "target": "t",
                        "result": "ok",
                    }
                    with lock:  # the device's own requests are one at a time
                        answer = device.request(
                            "POST", "/api/v1/device/events", {"events": [event]}
                        )
                if answer.status_code in (200, 201):
                    with lock:
                        done[kind].add(name)
        except httpx.HTTPError:
            return  # killed: whatever was in flight is unacknowledged
        finally:
            http.close()

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    return threads, done


def test_sigkill_mid_append_loses_nothing_acknowledged(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "srv"
    rng = random.Random(15)
    server = ServerProcess.start(data, db_url)
    token = (data / "admin.token").read_text().strip()
    ca = DeviceCa.make()
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    group = {"name": "cars", "ca_pem": ca.ca_pem, "hardware_id": HW, "region": "eu"}
    assert admin.post("/api/v1/enrollment-groups", json=group).status_code == 201
    admin.close()
    device = Device(server.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    acknowledged: dict[str, set[str]] = {"token": set(), "group": {"cars"}, "event": set()}
    held: list[str] = []  # checkpoints an auditor fetched between the kills
    try:
        for round_ in range(ROUNDS):
            stop = threading.Event()
            threads, done = _busy(server.url, token, ca.ca_pem, device, stop, round_)
            threading.Event().wait(rng.uniform(0.5, 2.0))  # a random moment under load
            server.kill()
            stop.set()
            for thread in threads:
                thread.join(30)
            for kind, names in done.items():
                acknowledged[kind] |= names
            server = ServerProcess.start(data, db_url)
            device.http.close()
            device.http = httpx.Client(base_url=server.url, timeout=30)
            signed = httpx.post(
                f"{server.url}/api/v1/audit/checkpoint",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert signed.status_code == 200, signed.text
            held.append(signed.json()["note"])
        assert sum(len(v) for v in acknowledged.values()) > ROUNDS  # the load was real
        _check(server.url, token, db_url, data, acknowledged, held)
    finally:
        server.stop()
        device.close()


def _check(
    url: str,
    token: str,
    db_url: str,
    data: Path,
    acknowledged: dict[str, set[str]],
    held: list[str],
) -> None:
    from otaguard.audit.entry import parse_entry

    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    found = []  # type: ignore[var-annotated]
    while True:
        window = {"start": len(found), "end": len(found) + 1000}
        page = client.get("/api/v1/audit/entries", params=window)
        batch = [parse_entry(e["entry"].encode()) for e in page.json()]
        found += batch
        if len(batch) < 1000:
            break
    client.close()
    recorded: dict[str, set[str]] = {
        "token": {e.event.subject for e in of(found, "token.create")} - {"admin"},
        "group": {e.event.subject for e in of(found, "group.create")},
        "event": {str(e.event.details["event"]) for e in of(found, "device.install")},
    }
    db = Database(db_url)
    try:
        with db.reading() as session:
            happened: dict[str, set[str]] = {
                "token": set(session.scalars(select(ApiToken.name))) - {"admin"},
                "group": set(session.scalars(select(EnrollmentGroup.name))),
                "event": set(session.scalars(select(DeviceEvent.id))),
            }
    finally:
        db.dispose()
    for kind, names in acknowledged.items():
        missing = names - recorded[kind]
        assert not missing, f"acknowledged {kind} without an entry: {sorted(missing)[:3]}"
        assert recorded[kind] == happened[kind], f"{kind}: entries and actions differ"
    key = audit_key(data)
    for note in held:  # every checkpoint handed out before a kill: still extended
        verify_over_http(url, token, key, note.encode())
