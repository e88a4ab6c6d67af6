"""Release uploads: accepted when everything verifies, refused with the check's name otherwise."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from otaguard.server.client import FleetClient, FleetRefused
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer


@pytest.fixture
def client(live: LiveServer) -> FleetClient:  # type: ignore[misc]
    with FleetClient(live.url, live.admin_token) as fleet:
        yield fleet


def refused(check: str, action: object) -> None:
    with pytest.raises(FleetRefused) as info:
        action()  # type: ignore[operator]
    assert info.value.check == check, info.value


def test_first_release_is_published_and_served(
    live: LiveServer, client: FleetClient, tmp_path: Path
) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    image = repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    answer = repo.upload(client)
    assert answer["roots"] == [1]
    assert answer["targets"] == ["acme-ecu-v2/1.0.0.img"]
    assert [t["name"] for t in client.releases()] == ["acme-ecu-v2/1.0.0.img"]
    http = live.client()
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    served = http.get(f"/repo/targets/acme-ecu-v2/{sha}.1.0.0.img")
    assert served.content == image.read_bytes()
    assert "immutable" in served.headers["Cache-Control"]
    part = http.get(f"/repo/targets/acme-ecu-v2/{sha}.1.0.0.img", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == image.read_bytes()[10:20]
    again = http.get(
        f"/repo/targets/acme-ecu-v2/{sha}.1.0.0.img",
        headers={"If-None-Match": served.headers["ETag"]},
    )
    assert again.status_code == 304
    assert http.get("/repo/metadata/timestamp.json").status_code == 200
    assert http.get("/repo/metadata/1.root.json").status_code == 200
    # a second release on top: the offline repository moved to the next version
    repo.add("acme-ecu-v2/2.0.0.img", b"two " * 1000, version="2.0.0", counter=2)
    repo.sign("targets0")
    answer = repo.upload(client)
    assert answer["roles"] == {"targets": 2}
    assert answer["targets"] == ["acme-ecu-v2/2.0.0.img"]


def test_unsigned_upload_is_refused(live: LiveServer, client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign("root")
    refused("unsigned", lambda: repo.upload(client))


def test_below_threshold_is_refused(live: LiveServer, client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(
        tmp_path, live.config.online_keys_dir, "--targets-threshold", "2", targets_keys=2
    )
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign("root", "targets0")
    refused("threshold", lambda: repo.upload(client))


def test_expired_role_is_refused(live: LiveServer, client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    md = repo.staged("targets")
    md.signed.expires = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    repo.restage("targets", md, "targets0")
    refused("expired", lambda: repo.upload(client))


def test_rolled_back_role_is_refused(live: LiveServer, client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    old = repo.staged("targets")
    repo.upload(client)
    repo.add("acme-ecu-v2/2.0.0.img", b"two " * 1000, version="2.0.0", counter=2)
    repo.sign("targets0")
    repo.upload(client)
    # targets v1 again (validly signed, once published): a rollback
    roles = {"targets": old.to_bytes()}
    refused("rollback", lambda: client.upload_release([], roles))


def test_missing_image_is_refused(live: LiveServer, client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    refused("missing-image", lambda: repo.upload(client, images=False))


def test_artifact_with_the_wrong_hash_is_refused(client: FleetClient, tmp_path: Path) -> None:
    path = tmp_path / "x.img"
    path.write_bytes(b"not what the name says")
    refused("digest", lambda: client.upload_artifact("00" * 32, path))


def test_image_with_another_length_is_refused(
    live: LiveServer, client: FleetClient, tmp_path: Path
) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    md = repo.staged("targets")
    md.signed.targets["acme-ecu-v2/1.0.0.img"].length += 1
    repo.restage("targets", md, "targets0")
    refused("image-length", lambda: repo.upload(client))


def test_foreign_online_keys_are_refused(client: FleetClient, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, None)  # online keys of its own, not the server's
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    refused("online-keys", lambda: repo.upload(client))


def test_release_upload_needs_a_release_role(live: LiveServer, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    with FleetClient(live.url, live.token("operator")) as operator:
        with pytest.raises(FleetRefused) as info:
            repo.upload(operator)
        assert info.value.status == 403
    with FleetClient(live.url, live.token("release-manager")) as manager:
        assert repo.upload(manager)["roots"] == [1]
