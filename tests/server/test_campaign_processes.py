"""The campaign evaluator across real server processes on one PostgreSQL database: the process
holding the jobs lease is killed (SIGKILL) mid-campaign, the other takes the evaluator over,
and every report the dead process acknowledged is counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from otaguard.server.client import FleetClient
from otaguard.server.db import Database
from otaguard.server.lease import Lease
from server.helpers_campaigns import POLICY, V2, Fleet, event, make_fleet, report, token
from server.helpers_devices import HW
from server.helpers_process import ServerProcess, wait_for


def _move(fleet: Fleet, url: str) -> None:
    for device in fleet.devices:
        device.http.close()
        device.base_url = url
        device.http = httpx.Client(base_url=url, timeout=30)


def test_evaluator_taken_over_after_sigkill_with_no_report_lost(
    pg_url: str, tmp_path: Path, started: list[ServerProcess]
) -> None:
    data = tmp_path / "srv"
    started.append(ServerProcess.start(data, pg_url))
    started.append(ServerProcess.start(data, pg_url))
    db = Database(pg_url)
    probe = Lease(db, "jobs", "probe", ttl=0)
    holder = wait_for(probe.holder_now)[0]
    pid = int(holder.split(":")[1])
    dead, alive = started if started[0].pid == pid else started[::-1]
    admin_token = (data / "admin.token").read_text().strip()
    fleet = make_fleet(dead.url, admin_token, pg_url, data / "online-keys", tmp_path, 16)
    try:
        rm = token(fleet.admin, "release-manager", "rita")
        ops = token(fleet.admin, "operator", "otto")
        campaign = rm.create_campaign(
            name="v2",
            targets=[V2],
            selector={"hardware_id": HW},
            compatible={HW: ["1.0.0"]},
            policy=POLICY,
        )["id"]
        ops.campaign_action(campaign, "approve")
        ops.campaign_action(campaign, "start")
        # every report goes to the lease holder and is acknowledged (200) before it dies
        first = wait_for(lambda: fleet.offered(campaign))
        for device_id in first:
            report(
                fleet.by_id(device_id),
                event("download-started", campaign),
                event("installed", campaign),
                event("confirmed", campaign),
            )
        dead.kill()

        _move(fleet, alive.url)
        with FleetClient(alive.url, admin_token) as admin:
            new = wait_for(lambda: _other_holder(probe, holder))
            assert int(new.split(":")[1]) == alive.pid
            status = wait_for(
                lambda: _advanced(admin.campaign(campaign)), why=lambda: admin.campaign(campaign)
            )
            assert status["waves"][0]["confirmed"] == len(first)  # no report lost
            later = wait_for(lambda: {d: w for d, w in fleet.offered(campaign).items() if w})
            assert set(first) | set(later) == {d.id for d in fleet.devices}
            for device_id in later:
                report(
                    fleet.by_id(device_id),
                    event("download-started", campaign),
                    event("confirmed", campaign),
                )
            done = wait_for(
                lambda: (s := admin.campaign(campaign))["status"] == "completed" and s,
                why=lambda: admin.campaign(campaign),
            )
            assert sum(w["confirmed"] for w in done["waves"]) == len(fleet.devices)
            assert done["ended"]["by"] == "evaluator"
        rm.close()
        ops.close()
    finally:
        fleet.admin.close()
        fleet.db.dispose()
        db.dispose()


def _advanced(status: dict[str, Any]) -> dict[str, Any] | None:
    return status if status["wave"] >= 1 else None


def _other_holder(probe: Lease, old: str) -> str | None:
    now = probe.holder_now()
    return now[0] if now is not None and now[0] != old else None
