"""What keeps the audit log from being a weakness: entries always fit (whatever signed
metadata holds), and refused enrolments, which anyone can cause, are recorded at a bounded
rate."""

from __future__ import annotations

import time
from pathlib import Path

from otaguard.server.client import FleetClient
from otaguard.server.services.enrollment import RefusalBudget
from server.helpers_audit_log import details, entries, of
from server.helpers_devices import HW, Device, DeviceCa
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer

V1 = "acme-ecu-v2/1.0.0.img"


def test_refused_enrolments_are_recorded_at_a_bounded_rate() -> None:
    budget = RefusalBudget(per_minute=3)
    assert [budget.take(60) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take(119) is None  # the same minute
    assert budget.take(120) == 3  # the next minute: the first one says how many were dropped
    assert budget.take(121) == 0


def test_the_budget_applies_to_the_server(live: LiveServer) -> None:
    ctx = live.app_state.server
    ctx.enrol_refusals.per_minute = 2
    frozen = (int(time.time()) // 60) * 60 + 30  # one minute for all four, whatever the clock
    real, ctx.clock = ctx.clock, lambda: frozen
    try:
        for n in range(4):
            stranger = Device(live.url, DeviceCa.make(f"Other{n}").issue(f"VIN{n:04d}"))
            assert stranger.enroll(signed_at=frozen).status_code == 403
    finally:
        ctx.clock = real
    assert len(of(entries(live), "enroll.refuse")) == 2


def test_hostile_custom_fields_still_fit_the_log(live: LiveServer, tmp_path: Path) -> None:
    """Signed metadata may carry custom fields of any length: the publish must not fail
    (after its files were written) because its entry would not fit."""
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add(V1, b"one " * 1000)
    md = repo.staged("targets")
    custom = md.signed.targets[V1].unrecognized_fields["custom"]
    custom["version"] = "1.0.0-" + "x" * 70_000
    custom["hardware_ids"] = [HW, *(f"hw-{n:05d}-{'y' * 100}" for n in range(2000))]
    repo.restage("targets", md, "targets0")
    repo.sign("root")
    with FleetClient(live.url, live.admin_token) as fleet:
        assert repo.upload(fleet)["targets"] == [V1]
        ca = DeviceCa.make()
        fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
        assert Device(live.url, ca.issue("VIN0001")).enroll().status_code == 201
        assert fleet.deploy(V1, group="eu")["assignments"]
    found = entries(live)
    (upload,) = of(found, "release.upload")
    assert len(details(upload)["version"]) == 128
    assert len(details(upload)["hardware_ids"]) == 50
    (deployment,) = of(found, "deployment.create")
    assert len(details(deployment)["hardware_ids"]) == 50
