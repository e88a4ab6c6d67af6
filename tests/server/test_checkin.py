"""The check-in end to end: deployments become director metadata the device's own checks accept.

The director metadata is verified with ``otaguard.repo.uptane`` against the
director root the server wrote (what vehicles are provisioned with), and cross-
checked with the published image repository, as the agent does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from otaguard.repo.uptane import Vehicle, cross_check, load_director_root, verify_director
from otaguard.server.client import FleetClient, FleetRefused
from repo.helpers_repository import cli
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer

V1 = "acme-ecu-v2/1.0.0.img"
V2 = "acme-ecu-v2/2.0.0.img"
DELTA = "acme-ecu-v2/2.0.0-from-1.0.0.delta"


def _published_targets(live: LiveServer) -> dict[str, object]:
    http = live.client()
    ts = Metadata.from_bytes(http.get("/repo/metadata/timestamp.json").content)
    snap = Metadata.from_bytes(
        http.get(f"/repo/metadata/{ts.signed.snapshot_meta.version}.snapshot.json").content  # type: ignore[attr-defined]
    )
    version = snap.signed.meta["targets.json"].version  # type: ignore[attr-defined]
    targets: Metadata[Targets] = Metadata.from_bytes(
        http.get(f"/repo/metadata/{version}.targets.json").content
    )
    return dict(targets.signed.targets)


@pytest.fixture
def world(
    live: LiveServer, tmp_path: Path
) -> tuple[OfflineRepo, FleetClient, Device, dict[str, Path]]:
    fleet = FleetClient(live.url, live.admin_token)
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    images = {V1: repo.add(V1, b"one " * 4000)}
    repo.sign()
    repo.upload(fleet)
    ca = DeviceCa.make()
    fleet.create_group(name="eu-ecu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    device = Device(live.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    return repo, fleet, device, images


def _verify(live: LiveServer, device: Device, answer: dict[str, str], last: int = 0) -> Targets:
    root = load_director_root(live.config.director_root_file.read_bytes())
    return verify_director(
        base64.b64decode(answer["director"]),
        root,
        Vehicle(device.id, {"main": HW}),
        nonce=device.last["X-Otaguard-Nonce"],
        now=dt.datetime.now(dt.UTC),
        last_version=last,
    )


def test_full_then_delta_instructions(live: LiveServer, world, tmp_path: Path) -> None:
    repo, fleet, device, images = world
    v1 = images[V1].read_bytes()
    device.post_state(
        [ecu_state(target=V1, version="1.0.0", sha256=hashlib.sha256(v1).hexdigest())]
    )
    first = device.check_in()
    assert first.status_code == 200
    assert _verify(live, device, first.json()).targets == {}  # nothing assigned yet
    # release 2.0.0 with a delta from 1.0.0, then deploy it
    images[V2] = repo.add(V2, b"two " * 4000, version="2.0.0", counter=2)
    delta = tmp_path / "delta.img"
    assert (
        cli("delta", "create", images[V1], images[V2], delta, "--key", repo.keys.priv("release"))
        == 0
    )
    assert (
        cli(
            "repo",
            "add-target",
            repo.dir,
            delta,
            "--name",
            DELTA,
            "--trusted-key",
            repo.keys.pub("release"),
        )
        == 0
    )
    repo.sign("targets0")
    repo.upload(fleet)
    made = fleet.deploy(V2, devices=[device.id])
    assert made["assignments"] == [{"device_id": device.id, "ecu": "main", "target": V2}]
    answer = device.check_in(first.headers["ETag"])
    assert answer.status_code == 200, answer.text
    director = _verify(live, device, answer.json(), last=1)
    assert director.version == 2
    assert list(director.targets) == [DELTA]
    published = _published_targets(live)
    assert [
        i.target.path
        for i in cross_check(director, Vehicle(device.id, {"main": HW}), published.get)  # type: ignore[arg-type]
    ] == [DELTA]
    # an ECU whose image the repository has no delta from gets the full image
    device.post_state([ecu_state(target="other", version="0.9.0", sha256="ab" * 32)])
    director = _verify(live, device, device.check_in().json(), last=2)
    assert list(director.targets) == [V2]
    # nothing new: 304, and the nonce of each check-in is echoed in its own answer
    etag = device.check_in().headers["ETag"]
    assert device.check_in(etag).status_code == 304


def test_a_deployment_of_an_unknown_or_delta_target_is_refused(world) -> None:
    _, fleet, device, _ = world
    with pytest.raises(FleetRefused) as info:
        fleet.deploy("acme-ecu-v2/9.9.9.img", devices=[device.id])
    assert info.value.check == "unknown-target"


def test_group_deployment_and_generation(world) -> None:
    _, fleet, device, _ = world
    made = fleet.deploy(V1, group="eu-ecu")
    assert [a["device_id"] for a in made["assignments"]] == [device.id]
    assert fleet.device(device.id)["generation"] == 2
    assert fleet.device(device.id)["ecus"][0]["assigned"] == V1


def test_an_idle_check_in_writes_nothing(live: LiveServer, world) -> None:
    """A 304 check-in: the database is untouched (last-seen waits in memory for the flush)."""
    _, _, device, _ = world
    device.post_state()
    etag = device.check_in().headers["ETag"]
    ctx = live.app_state.server
    ctx.last_seen.stop()  # flushes, and its thread no longer writes during the measurement
    statements: list[str] = []

    from sqlalchemy import event

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    for engine in ctx.db.engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            assert device.check_in(etag).status_code == 304
    finally:
        for engine in ctx.db.engines:
            event.remove(engine, "before_cursor_execute", record)
    writes = [
        s for s in statements if not s.lstrip().upper().startswith(("SELECT", "BEGIN", "PRAGMA"))
    ]
    assert writes == []
    assert ctx.last_seen.pending() == {device.id: pytest.approx(ctx.now(), abs=5)}
    assert ctx.last_seen.flush() == 1
