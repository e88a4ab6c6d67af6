"""Real server processes: SIGKILL and restart, two processes on one database, lease takeover,
SIGTERM draining a request in flight."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from otaguard.protocol.state import state_hash
from otaguard.server.client import FleetClient
from otaguard.server.db import Database
from otaguard.server.lease import Lease
from server.helpers_devices import HW, Device, DeviceCa
from server.helpers_process import ServerProcess, wait_for
from server.helpers_release import OfflineRepo


def _start(started: list[ServerProcess], data_dir: Path, db_url: str, *extra: str) -> ServerProcess:
    server = ServerProcess.start(data_dir, db_url, *extra)
    started.append(server)
    return server


def test_sigkill_and_restart_keeps_everything_acknowledged(
    db_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "srv"
    server = _start(started, data, db_url)
    token = (data / "admin.token").read_text().strip()
    fleet = FleetClient(server.url, token)
    repo = OfflineRepo.init(tmp_path, data / "online-keys")
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    repo.upload(fleet)
    ca = DeviceCa.make()
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    device = Device(server.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    assert device.post_state().status_code == 200
    fleet.deploy("acme-ecu-v2/1.0.0.img", devices=[device.id])
    fleet.close()
    server.kill()
    assert "initialised" not in "".join(_start(started, data, db_url).output)
    restarted = started[-1]
    fleet = FleetClient(restarted.url, token)
    shown = fleet.device(device.id)
    assert shown["ecus"][0]["assigned"] == "acme-ecu-v2/1.0.0.img"
    assert shown["generation"] == 2
    assert [t["name"] for t in fleet.releases()] == ["acme-ecu-v2/1.0.0.img"]
    device.base_url = restarted.url
    device.http = httpx.Client(base_url=restarted.url, timeout=30)
    answer = device.check_in()  # the stored state survived: no 409
    assert answer.status_code == 200, answer.text
    fleet.close()


def test_two_processes_on_one_postgresql_database(
    pg_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "srv"
    a = _start(started, data, pg_url)
    b = _start(started, data, pg_url)
    token = (data / "admin.token").read_text().strip()
    ca = DeviceCa.make()
    with FleetClient(a.url, token) as fleet:
        fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    device = Device(a.url, ca.issue("VIN0002"))
    assert device.enroll().status_code == 201
    body = {"ecus": [{"serial": "main", "hardware_id": HW}]}
    nonce = "ef" * 16
    assert device.request("POST", "/api/v1/device/state", body, nonce=nonce).status_code == 200
    # the same signed request replayed against the other process: refused there too
    other = Device(b.url, device.identity)
    replay = other.request("POST", "/api/v1/device/state", body, nonce=nonce)
    assert (replay.status_code, replay.json()["error"]) == (401, "request-replay")
    other.state = state_hash(body)
    assert other.check_in().status_code == 200
    with FleetClient(b.url, token) as fleet:
        assert [d["id"] for d in fleet.devices()] == ["VIN0002"]


def test_lease_is_taken_over_when_its_holder_dies(
    pg_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "srv"
    a = _start(started, data, pg_url)
    b = _start(started, data, pg_url)
    db = Database(pg_url)
    probe = Lease(db, "jobs", "probe", ttl=0)
    try:
        holder = wait_for(probe.holder_now)
        pid = int(holder[0].split(":")[1])
        assert pid in (a.pid, b.pid)
        dead, alive = (a, b) if pid == a.pid else (b, a)
        dead.kill()
        new = wait_for(lambda: _other_holder(probe, holder[0]))
        assert int(new.split(":")[1]) == alive.pid
    finally:
        db.dispose()


def _other_holder(probe: Lease, old: str) -> str | None:
    now = probe.holder_now()
    return now[0] if now is not None and now[0] != old else None


def test_sigterm_drains_a_request_in_flight(
    db_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "srv"
    server = _start(started, data, db_url)
    token = (data / "admin.token").read_text().strip()
    chunks = [bytes([i]) * 65536 for i in range(16)]
    sha256 = hashlib.sha256(b"".join(chunks)).hexdigest()
    first_sent = threading.Event()
    may_go_on = threading.Event()

    def body() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks):
            yield chunk
            if i == 0:
                first_sent.set()
                may_go_on.wait(30)

    result: list[httpx.Response] = []

    def upload() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            result.append(
                http.put(
                    f"/api/v1/artifacts/sha256/{sha256}",
                    content=body(),
                    headers={"Authorization": f"Bearer {token}", "Content-Length": str(16 * 65536)},
                )
            )

    thread = threading.Thread(target=upload)
    thread.start()
    assert first_sent.wait(30)
    time.sleep(0.2)  # let the server start handling the request before the signal
    server.terminate(wait=False)
    time.sleep(0.5)  # the signal is handled while the body is still coming
    may_go_on.set()
    thread.join(60)
    assert result and result[0].status_code == 201, result
    # uvicorn re-raises the signal once drained: the exit status says SIGTERM (the CLI's 143)
    assert server.proc.wait(60) in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    assert (data / "artifacts" / "sha256" / sha256).read_bytes() == b"".join(chunks)


def test_workers_share_one_socket_and_stop_on_sigterm(
    db_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    """``--workers 2``: uvicorn's multiprocess mode, each worker built by the app factory."""
    data = tmp_path / "srv"
    server = _start(started, data, db_url, "--workers", "2")
    token = (data / "admin.token").read_text().strip()
    ca = DeviceCa.make()
    with FleetClient(server.url, token) as fleet:
        fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    device = Device(server.url, ca.issue("VIN0003"))
    assert device.enroll().status_code == 201
    assert device.post_state().status_code == 200
    for _ in range(6):  # fresh connections: both workers answer alike
        device.http.close()
        device.http = httpx.Client(base_url=server.url, timeout=30)
        assert device.check_in().status_code == 200
    assert server.terminate() in (0, 128 + signal.SIGTERM, -signal.SIGTERM)


def test_idle_connection_outlives_a_clients_pool_expiry(
    started: list[ServerProcess], tmp_path: Path
) -> None:
    """An idle keep-alive connection is still open after httpx's 5 s pool expiry: the client
    closes first, so no request is sent on a connection the server is closing (a read error
    in a fleet of pollers when the two timers are equal)."""
    import http.client
    from urllib.parse import urlsplit

    server = _start(started, tmp_path / "srv", f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}")
    split = urlsplit(server.url)
    conn = http.client.HTTPConnection(split.hostname or "", split.port, timeout=10)
    try:
        conn.request("GET", "/openapi.json")
        first = conn.getresponse()
        first.read()
        local = conn.sock.getsockname()
        time.sleep(6.0)  # past httpx's keepalive_expiry (and uvicorn's default of 5 s)
        conn.request("GET", "/openapi.json")
        second = conn.getresponse()  # RemoteDisconnected if the server closed it
        second.read()
        assert conn.sock.getsockname() == local  # the same connection, not a new one
        assert first.status == second.status == 200
    finally:
        conn.close()
