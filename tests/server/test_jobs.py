"""Background jobs: the timestamp is re-signed before it expires; old nonces are forgotten."""

from __future__ import annotations

from pathlib import Path

from tuf.api.metadata import Metadata

from otaguard.server import jobs
from otaguard.server.client import FleetClient
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer


def test_timestamp_is_re_signed_before_it_expires(live: LiveServer, tmp_path: Path) -> None:
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 100)
    repo.sign()
    with FleetClient(live.url, live.admin_token) as fleet:
        repo.upload(fleet)
    ctx = live.app_state.server
    before = Metadata.from_bytes(live.client().get("/repo/metadata/timestamp.json").content)
    assert jobs.run_once(ctx).get("timestamp") is None  # a day left: nothing to do
    real = ctx.clock
    ctx.clock = lambda: before.signed.expires.timestamp() - 60  # a minute before expiry
    try:
        done = jobs.run_once(ctx)
    finally:
        ctx.clock = real
    assert done["timestamp"] == before.signed.version + 1
    after = Metadata.from_bytes(live.client().get("/repo/metadata/timestamp.json").content)
    assert after.signed.version == before.signed.version + 1
    assert after.signed.expires > before.signed.expires
