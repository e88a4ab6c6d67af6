"""Campaigns on the real server, SQLite and PostgreSQL: waves, kill switch, silent devices,
health against control, compatibility, roles and the two-person rule.

A few dozen real devices (own keys, signed requests); the evaluator is ticked directly with
an explicit time (``Fleet.tick``), so the tests decide when it runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otaguard.server.client import FleetClient, FleetError, FleetRefused
from otaguard.server.config import Timing
from otaguard.server.services.campaign_notice import Notice
from server.helpers_audit_log import details, entries, of
from server.helpers_campaigns import (
    POLICY,
    V1,
    V2,
    Fleet,
    director_targets,
    event,
    health,
    make_fleet,
    report,
    token,
)
from server.helpers_devices import HW
from server.helpers_server import LiveServer, start_live

N = 30


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A live server whose check-ins read the running campaigns afresh every time: the
    evaluator is ticked from the test, outside the server's process (no cache to wait out)."""
    timing = Timing(last_seen_flush=0.2, job_interval=3600, campaign_cache=0.0)
    server = start_live(tmp_path / "srv", db_url, timing=timing)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(live: LiveServer, db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    made = make_fleet(
        live.url, live.admin_token, db_url, live.config.online_keys_dir, tmp_path, N, old=4
    )
    yield made
    made.db.dispose()
    made.admin.close()
    for device in made.devices:
        device.close()


def _running(fleet: Fleet, policy: str = POLICY) -> tuple[str, FleetClient]:
    """A campaign of 2.0.0 over 1.0.0 created by a release manager, approved and started by
    an operator; the operator's client."""
    rm = token(fleet.admin, "release-manager", "rita")
    ops = token(fleet.admin, "operator", "otto")
    made = rm.create_campaign(
        name="v2",
        targets=[V2],
        selector={"hardware_id": HW},
        compatible={HW: ["1.0.0"]},
        policy=policy,
    )
    assert (made["status"], made["population"]) == ("draft", N)
    ops.campaign_action(made["id"], "approve")
    assert ops.campaign_action(made["id"], "start")["status"] == "running"
    rm.close()
    return made["id"], ops


def _confirm(fleet: Fleet, campaign: str, ids: object) -> None:
    for device_id in ids:  # type: ignore[attr-defined]
        device = fleet.by_id(device_id)
        report(
            device,
            event("download-started", campaign),
            event("installed", campaign),
            event("confirmed", campaign),
        )


def test_good_release_completes_every_wave_and_never_offers_incompatible_devices(
    fleet: Fleet, live: LiveServer
) -> None:
    before = {d.id: fleet.check_in(d).headers["ETag"] for d in fleet.devices}
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    old = {d.id for d in fleet.devices[-4:]}  # running 0.9.0: not declared compatible
    # only the devices whose answer changes get a new ETag: wave 1 keeps its 304
    for device in fleet.devices:
        answer = device.check_in(before[device.id])
        assert answer.status_code == (200 if waves[device.id] == 0 else 304), device.id
    offered = fleet.offered(campaign)
    assert set(offered) == {d for d, w in waves.items() if w == 0} - old
    assert set(offered.values()) == {0}
    for device in fleet.devices:  # the new ETag is stable: idle again
        assert fleet.check_in(device, etag=True).status_code == 304
    _confirm(fleet, campaign, offered)
    # a replayed report moves nothing
    replay = event("confirmed", campaign)
    first = next(iter(offered))
    report(fleet.by_id(first), replay)
    report(fleet.by_id(first), replay)
    wave0 = fleet.admin.campaign(campaign)["waves"][0]
    assert (wave0["confirmed"], wave0["offered"]) == (len(offered), 0)

    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "advance", ticked.decision.reason
    later = fleet.offered(campaign)
    assert set(later) == set(waves) - old
    assert {later[d] for d in set(later) - set(offered)} == {1}
    _confirm(fleet, campaign, set(later) - set(offered))
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "complete", ticked.decision.reason

    status = fleet.admin.campaign(campaign)
    assert status["status"] == "completed"
    assert sum(w["confirmed"] for w in status["waves"]) == N - len(old)
    assert status["incompatible"] == len(old)
    assert set(status["incompatible_devices"]) == old
    for device_id in old:  # never offered, before or after
        body = fleet.check_in(fleet.by_id(device_id)).json()
        assert body["campaign"] is None and V2 not in director_targets(body)
    found = entries(live)
    assert [details(e)["action"] for e in of(found, "killswitch.decision")] == [
        "advance",
        "complete",
    ]
    assert len(of(found, "campaign.complete")) == 1
    assert {e.event.subject for e in of(found, "device.assign")} == set(later)
    ops.close()


def test_bad_release_is_halted_in_its_first_wave(fleet: Fleet, live: LiveServer) -> None:
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    wave0 = {d for d, w in waves.items() if w == 0}
    offered = fleet.offered(campaign)
    assert set(offered) <= wave0
    for device_id in offered:  # the trial boot fails on every device
        report(
            fleet.by_id(device_id),
            event("download-started", campaign),
            event("installed", campaign),
            event("reverted", campaign),
        )
    # a boot failure ends the offer for that device: its old assignment (none) is back,
    # so it does not try the failing release again
    body = fleet.check_in(fleet.by_id(next(iter(offered)))).json()
    assert (body["campaign"], director_targets(body)) == (None, [])
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "halt", ticked.decision.reason
    status = fleet.admin.campaign(campaign)
    assert (status["status"], status["wave"]) == ("halted", 0)
    exposed = sum(w["failed_boot"] + w["confirmed"] + w["installed"] for w in status["waves"])
    assert exposed == len(offered) <= len(wave0)
    # no device is offered the release after the tick, in any wave
    assert fleet.offered(campaign) == {}
    found = entries(live)
    (halt,) = of(found, "campaign.halt")
    assert halt.event.actor.id == "evaluator"
    assert details(halt)["failure"][0]["k"] == len(offered)
    ops.close()


def test_manual_kill_switch_stops_offers_at_once_abandons_and_reverts(
    fleet: Fleet, live: LiveServer
) -> None:
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    wave0 = sorted(d for d, w in waves.items() if w == 0 and d not in _old(fleet))
    assert len(wave0) >= 3
    downloading, trial, late = wave0[0], wave0[1], wave0[2:]
    for device_id in (downloading, trial):
        body = fleet.check_in(fleet.by_id(device_id)).json()
        assert V2 in director_targets(body)
    report(fleet.by_id(downloading), event("download-started", campaign))
    report(fleet.by_id(trial), event("download-started", campaign), event("boot-trial", campaign))
    halted = ops.campaign_action(campaign, "halt", reason="field reports")
    assert halted["status"] == "halted"
    # devices of the open wave that had not checked in yet are offered nothing
    for device_id in late:
        body = fleet.check_in(fleet.by_id(device_id)).json()
        assert body["campaign"] is None and body["actions"] == []
        assert V2 not in director_targets(body)
    body = fleet.check_in(fleet.by_id(downloading)).json()
    assert body["actions"] == [{"kind": "abandon", "campaign": campaign}]
    assert director_targets(body) == []  # back to what it had: nothing assigned
    assert f"otaguard/v1/campaigns/{campaign}" in body["push"]["topics"]
    body = fleet.check_in(fleet.by_id(trial)).json()
    assert body["actions"] == [{"kind": "revert", "campaign": campaign}]
    etag = fleet.etags[trial]
    assert fleet.by_id(trial).check_in(etag).status_code == 304
    report(fleet.by_id(downloading), event("abandoned", campaign))
    report(fleet.by_id(trial), event("reverted", campaign))
    # acted on: the answer (no action) changes, and so does the ETag
    answer = fleet.by_id(trial).check_in(etag)
    assert answer.status_code == 200 and answer.json()["actions"] == []
    wave = fleet.admin.campaign(campaign)["waves"][0]
    assert (wave["abandoned"], wave["reverted"], wave["failed_boot"]) == (1, 1, 0)
    (kill,) = of(entries(live), "campaign.kill")
    assert (kill.event.actor.id, details(kill)["told_to_abandon"]) == ("otto", 1)
    assert details(kill)["told_to_revert"] == 1
    with pytest.raises(FleetError, match="409 campaign-state"):  # halted is final
        ops.campaign_action(campaign, "resume")
    ops.close()


def test_the_release_declares_what_it_may_replace_and_operators_only_narrow_it(
    live: LiveServer, db_url: str, tmp_path: Path
) -> None:
    """2.0.0 is signed as replacing 1.0.0 only (``repo add-target --compatible-with``): a
    campaign without ``compatible`` takes that, one that names 0.9.0 too is refused, and
    the 0.9.0 devices are counted incompatible, never offered."""
    fleet = make_fleet(
        live.url, live.admin_token, db_url, live.config.online_keys_dir, tmp_path, 8,
        old=3, replaces=["1.0.0"],
    )  # fmt: skip
    rm = token(fleet.admin, "release-manager", "rita")
    wider = {HW: ["1.0.0", "0.9.0"]}
    with pytest.raises(FleetRefused, match=r"does not declare acme-ecu-v2 0\.9\.0 compatible"):
        rm.create_campaign(
            name="wide", targets=[V2], selector={"hardware_id": HW}, compatible=wider
        )
    one_wave = POLICY.replace("fractions = [0.5, 1.0]", "fractions = [1.0]")
    made = rm.create_campaign(
        name="v2", targets=[V2], selector={"hardware_id": HW}, compatible={}, policy=one_wave
    )
    assert made["compatible"] == {HW: ["1.0.0"]}
    ops = token(fleet.admin, "operator", "otto")
    ops.campaign_action(made["id"], "approve")
    ops.campaign_action(made["id"], "start")
    for device in fleet.devices:
        fleet.check_in(device)
    old = {d.id for d in fleet.devices[-3:]}
    assert set(fleet.admin.campaign(made["id"])["incompatible_devices"]) == old
    assert not old & set(fleet.offered(made["id"]))
    for client in (rm, ops, fleet.admin):
        client.close()
    fleet.db.dispose()


def test_without_a_declaration_a_campaign_must_name_the_versions(fleet: Fleet) -> None:
    rm = token(fleet.admin, "release-manager", "rita")
    with pytest.raises(FleetRefused, match="the release declares none"):
        rm.create_campaign(name="v2", targets=[V2], selector={"hardware_id": HW}, compatible={})
    rm.close()


@pytest.mark.parametrize("revert_on_halt", [True, False])
def test_a_device_that_installs_after_the_halt_is_told_to_revert(
    fleet: Fleet, revert_on_halt: bool
) -> None:
    """Downloading when the kill switch was pulled, the device finished before it heard
    (the agent ignores ``abandon`` once installed): its late install is told to revert like
    a trial at the halt, when the policy says so; otherwise it keeps the release."""
    policy = POLICY.replace("[halt]", f"[halt]\nrevert_on_halt = {str(revert_on_halt).lower()}")
    campaign, ops = _running(fleet, policy)
    waves = fleet.waves(campaign)
    device_id = min(d for d, w in waves.items() if w == 0 and d not in _old(fleet))
    device = fleet.by_id(device_id)
    assert V2 in director_targets(fleet.check_in(device).json())
    report(device, event("download-started", campaign))
    ops.campaign_action(campaign, "halt", reason="field reports")
    report(device, event("installed", campaign), event("boot-trial", campaign))
    body = fleet.check_in(device).json()
    expected = [{"kind": "revert", "campaign": campaign}] if revert_on_halt else []
    assert body["actions"] == expected
    if revert_on_halt:
        report(device, event("reverted", campaign))
        wave = fleet.admin.campaign(campaign)["waves"][0]
        assert (wave["reverted"], wave["failed_boot"], wave["installed"]) == (1, 0, 0)
    ops.close()


def _old(fleet: Fleet) -> set[str]:
    return {d.id for d in fleet.devices[-4:]}


def test_silent_devices_count_as_failures(fleet: Fleet) -> None:
    campaign, ops = _running(fleet)
    offered = fleet.offered(campaign)
    assert len(offered) >= 3
    quiet = sorted(offered)[:3]
    (ticked,) = fleet.tick(time.time())  # before the deadline: nobody is silent
    assert ticked.silent == 0 and ticked.decision.action.value == "none"
    (ticked,) = fleet.tick(time.time() + 601)  # deadline_s = 600
    assert ticked.silent == len(offered)
    assert ticked.decision.action.value == "halt"
    wave = fleet.admin.campaign(campaign)["waves"][0]
    assert (wave["silent"], wave["offered"], wave["failures"]) == (len(offered), 0, len(offered))
    # a late report still moves a silent device out of silent
    report(fleet.by_id(quiet[0]), event("confirmed", campaign))
    wave = fleet.admin.campaign(campaign)["waves"][0]
    assert (wave["silent"], wave["confirmed"]) == (len(offered) - 1, 1)
    ops.close()


def test_health_worse_than_control_halts(fleet: Fleet) -> None:
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    offered = fleet.offered(campaign)
    _confirm(fleet, campaign, offered)
    for device_id in offered:  # updated devices reset 20 times an hour
        health(fleet.by_id(device_id), campaign, resets=20, crashes=0)
    control = [d for d, w in waves.items() if w == 1]
    assert len(control) >= 3
    for device_id in control:  # devices not yet updated: no resets
        health(fleet.by_id(device_id), None, resets=0, crashes=0)
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "halt", ticked.decision.reason
    assert "health resets" in ticked.decision.reason
    status = fleet.admin.campaign(campaign)
    assert status["status"] == "halted"
    assert sum(w["failures"] for w in status["waves"]) == 0  # halted on health alone
    assert status["control_health_devices"] == len(control)
    ops.close()


def test_equal_health_does_not_halt(fleet: Fleet) -> None:
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    offered = fleet.offered(campaign)
    _confirm(fleet, campaign, offered)
    for device_id in offered:
        health(fleet.by_id(device_id), campaign, resets=1, crashes=0)
    for device_id in [d for d, w in waves.items() if w == 1]:
        health(fleet.by_id(device_id), None, resets=1, crashes=0)
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "advance", ticked.decision.reason
    ops.close()


def test_every_wave_has_exactly_its_planned_size(fleet: Fleet) -> None:
    """The server sizes the waves from the selected devices' own buckets: 15 of 30 in wave 0,
    every time (the hash alone would make it binomial: 15 only one time in seven)."""
    rm = token(fleet.admin, "release-manager", "rita")
    for _ in range(4):
        made = rm.create_campaign(
            name="v2", targets=[V2], selector={"hardware_id": HW}, compatible={HW: ["1.0.0"]},
            policy=POLICY,
        )  # fmt: skip
        assert made["plan"] == [N // 2, N]
        assert made["warnings"] == []  # 15 devices can show the loose policy's bound
        waves = list(fleet.waves(made["id"]).values())
        assert (waves.count(0), waves.count(1)) == (N // 2, N // 2)
    small = POLICY.replace("fractions = [0.5, 1.0]", "fractions = [0.1, 1.0]")
    made = rm.create_campaign(
        name="v2", targets=[V2], selector={"hardware_id": HW}, compatible={HW: ["1.0.0"]},
        policy=small,
    )  # fmt: skip
    (warning,) = made["warnings"]
    assert "wave 0 holds 3 devices" in warning and "stop at wave 0 for good" in warning
    rm.close()


def test_two_person_rule_and_roles(fleet: Fleet, live: LiveServer) -> None:
    admin = fleet.admin
    rm = token(admin, "release-manager", "rita")
    ops = token(admin, "operator", "otto")
    auditor = token(admin, "auditor", "ada")
    spec = {
        "name": "v2",
        "targets": [V2],
        "selector": {"hardware_id": HW},
        "compatible": {HW: ["1.0.0"]},
    }
    with pytest.raises(FleetRefused) as refused:  # operators approve and run, not create
        ops.create_campaign(**spec)  # type: ignore[arg-type]
    assert refused.value.status == 403
    made = admin.create_campaign(**spec)  # type: ignore[arg-type]
    with pytest.raises(FleetRefused) as refused:
        admin.campaign_action(made["id"], "approve")
    assert (refused.value.status, refused.value.check) == (403, "two-person-rule")
    same_person = token(admin, "operator", "admin")  # another token, the same name
    with pytest.raises(FleetRefused) as refused:
        same_person.campaign_action(made["id"], "approve")
    assert refused.value.check == "two-person-rule"
    with pytest.raises(FleetRefused) as refused:
        rm.campaign_action(made["id"], "approve")  # release managers do not approve
    assert (refused.value.status, refused.value.check) == (403, "forbidden")
    with pytest.raises(FleetRefused) as refused:
        auditor.campaign_action(made["id"], "start")
    assert refused.value.status == 403
    assert auditor.campaign(made["id"])["status"] == "draft"  # auditors read
    assert [c["id"] for c in auditor.campaigns()] == [made["id"]]
    ops.campaign_action(made["id"], "approve")
    with pytest.raises(FleetRefused) as refused:
        rm.campaign_action(made["id"], "start")
    assert refused.value.status == 403
    started = ops.campaign_action(made["id"], "start")
    assert started["approved"]["by"] == "otto" and started["started"]["by"] == "otto"
    found = entries(live)
    (created,) = of(found, "campaign.create")
    (approved,) = of(found, "campaign.approve")
    (start,) = of(found, "campaign.start")
    assert (created.event.actor.id, approved.event.actor.id) == ("admin", "otto")
    assert (approved.event.actor.role, details(approved)["created_by"]) == ("operator", "admin")
    assert start.event.subject == made["id"]
    for client in (rm, ops, auditor, same_person):
        client.close()


def test_creation_refuses_what_it_cannot_run(fleet: Fleet) -> None:
    admin = fleet.admin
    base = {"name": "v2", "targets": [V2], "selector": {"hardware_id": HW}}
    cases = [
        ({**base, "compatible": {}}, "invalid-request"),  # nothing declared compatible
        ({**base, "targets": ["nope.img"], "compatible": {HW: ["1.0.0"]}}, "unknown-target"),
        ({**base, "selector": {"region": "us"}, "compatible": {HW: ["1"]}}, "invalid-request"),
        (
            {**base, "compatible": {HW: ["1.0.0"]}, "policy": "[waves]\nfractions = [2]"},
            "invalid-policy",
        ),
    ]
    for spec, check in cases:
        with pytest.raises(FleetRefused) as refused:
            admin.create_campaign(**spec)  # type: ignore[arg-type]
        assert refused.value.check == check, spec
    assert admin.campaigns() == []
    assert V1  # the release the devices run stays published


def test_changes_are_pushed_after_commit_to_the_contract_topics(
    fleet: Fleet, live: LiveServer
) -> None:
    sent: list[Notice] = []
    live.app_state.server.notify = sent.append
    campaign, ops = _running(fleet)
    ops.campaign_action(campaign, "pause")
    ops.campaign_action(campaign, "resume")
    ops.campaign_action(campaign, "halt")
    assert [n.reason for n in sent] == ["start", "pause", "resume", "halt"]
    assert sent[0].topics() == [f"otaguard/v1/hardware/{HW}"]
    assert sent[0].payload()["spread_s"] > 0
    assert sent[-1].topics() == [f"otaguard/v1/campaigns/{campaign}"]
    assert sent[-1].payload() == {"v": 1, "reason": "halt", "campaign": campaign, "spread_s": 0}
    ops.close()


def test_a_failing_push_hook_changes_nothing(fleet: Fleet, live: LiveServer) -> None:
    def broken(_notice: Notice) -> None:
        raise ConnectionError("broker down")

    live.app_state.server.notify = broken
    campaign, ops = _running(fleet)  # started and acknowledged despite the hook
    assert fleet.admin.campaign(campaign)["status"] == "running"
    assert fleet.offered(campaign)  # polling alone delivers the offer
    ops.close()


def test_an_idle_check_in_during_a_campaign_writes_nothing_and_scans_nothing(
    fleet: Fleet, live: LiveServer
) -> None:
    """304s during a running campaign: no write, and no read of per-device campaign rows
    (here the campaign cache is off, so each check-in re-reads the small campaigns and
    groups tables; by default that happens once per process every 2 s)."""
    campaign, ops = _running(fleet)
    fleet.offered(campaign)
    etags = {d.id: fleet.check_in(d).headers["ETag"] for d in fleet.devices}
    ctx = live.app_state.server
    ctx.last_seen.flush()
    statements: list[str] = []

    from sqlalchemy import event as sa_event

    def record(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    for engine in ctx.db.engines:
        sa_event.listen(engine, "before_cursor_execute", record)
    try:
        for device in fleet.devices:
            assert device.check_in(etags[device.id]).status_code == 304
    finally:
        for engine in ctx.db.engines:
            sa_event.remove(engine, "before_cursor_execute", record)
    # the batched last-seen flush (lastseen.py, every 0.2 s here) is not the check-in's
    batched = "UPDATE devices SET last_seen"
    reads = [
        s for s in statements if not s.upper().startswith(("BEGIN", "PRAGMA", batched.upper()))
    ]
    assert [s for s in reads if not s.upper().startswith("SELECT")] == []
    assert not [s for s in reads if "campaign_devices" in s or "assignments" in s]
    assert not [s for s in reads if "FROM devices" in s and "WHERE devices.id" not in s]
    ops.close()


def test_transient_failures_are_retries_deterministic_ones_end_the_offer(fleet: Fleet) -> None:
    campaign, ops = _running(fleet)
    offered = sorted(fleet.offered(campaign))
    assert len(offered) >= 2
    flaky, refused = fleet.by_id(offered[0]), fleet.by_id(offered[1])
    report(flaky, event("download-started", campaign))
    report(flaky, event("download-failed", campaign, failure="transient"))
    report(refused, event("refused", campaign, failure="deterministic", check="signature"))
    wave = fleet.admin.campaign(campaign)["waves"][0]
    assert (wave["retries"], wave["downloading"], wave["failed_verification"]) == (1, 1, 1)
    assert wave["failures"] == 1  # the retry is not a failure
    body = fleet.check_in(flaky).json()  # still offered: the agent retries with back-off
    assert V2 in director_targets(body) and body["campaign"]["id"] == campaign
    body = fleet.check_in(refused).json()  # not offered again
    assert (body["campaign"], director_targets(body)) == (None, [])
    ops.close()


def test_pause_stops_new_offers_and_resume_brings_them_back(fleet: Fleet) -> None:
    campaign, ops = _running(fleet)
    waves = fleet.waves(campaign)
    wave0 = sorted(d for d, w in waves.items() if w == 0 and d not in _old(fleet))
    assert len(wave0) >= 2
    first, waiting = fleet.by_id(wave0[0]), fleet.by_id(wave0[1])
    assert V2 in director_targets(fleet.check_in(first).json())
    report(first, event("download-started", campaign))
    ops.campaign_action(campaign, "pause")
    body = fleet.check_in(waiting).json()  # paused: nobody new is offered
    assert (body["campaign"], director_targets(body)) == (None, [])
    body = fleet.check_in(first).json()  # in flight: goes on, no action
    assert V2 in director_targets(body) and body["actions"] == []
    report(first, event("confirmed", campaign))
    (ticked,) = fleet.tick(time.time())  # a paused campaign does not advance
    assert ticked.decision.action.value == "none"
    ops.campaign_action(campaign, "resume")
    assert V2 in director_targets(fleet.check_in(waiting).json())
    status = fleet.admin.campaign(campaign)
    assert status["paused"]["by"] == "otto" and status["resumed"]["by"] == "otto"
    assert status["waves"][0]["confirmed"] == 1
    ops.close()


def test_bad_telemetry_and_unknown_campaigns_are_refused(fleet: Fleet) -> None:
    device = fleet.devices[0]
    good: dict[str, Any] = {
        "campaign": None,
        "window_s": 60.0,
        "counts": {},
        "flags": {},
        "metrics": {},
    }
    bad = [
        {**good, "window_s": 0},
        {**good, "window_s": 8 * 86400.0},
        {**good, "counts": {"resets": -1}},
        {**good, "counts": {"Resets": 1}},
        {**good, "metrics": {"x" * 41: 1.0}},
        {**good, "metrics": {f"m{i}": 1.0 for i in range(33)}},
        {**good, "flags": {"heartbeat_lost": "yes"}},
        {**good, "counts": {"resets": "3"}},
        {**good, "campaign": "not-a-campaign"},
    ]
    for body in bad:
        answer = device.request("POST", "/api/v1/device/health", body)
        assert answer.status_code == 422, body
    answer = device.request(
        "POST",
        "/api/v1/device/health",
        None,
        extra={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert device.request("POST", "/api/v1/device/health", good).status_code == 200
    answer = device.request(
        "POST", "/api/v1/device/events", {"events": [event("confirmed", "c-nothex")]}
    )
    assert answer.status_code == 422
    # an event naming a campaign that never offered this device moves nothing
    report(device, event("confirmed", "c-000000000000"))
    http = fleet.admin
    with pytest.raises(FleetError, match="404"):
        http.campaign("c-000000000000")
    with pytest.raises(FleetRefused) as refused:
        http.campaign("C-XYZ")
    assert refused.value.status == 422
    with pytest.raises((FleetError, FleetRefused)):  # one segment: never another resource
        http.campaign("../tokens")


def _offered_to(fleet: Fleet, campaign: str, devices: list[Any]) -> dict[str, int]:
    out = {}
    for device in devices:
        body = fleet.check_in(device).json()
        if body["campaign"] and body["campaign"]["id"] == campaign and not body["actions"]:
            assert V2 in director_targets(body)
            out[device.id] = body["campaign"]["wave"]
    return out


def _completed(fleet: Fleet, present: list[Any]) -> tuple[str, FleetClient, set[str]]:
    """A campaign run to completion over ``present`` (both waves confirmed); the operator's
    client and the devices that confirmed."""
    campaign, ops = _running(fleet)
    wave0 = _offered_to(fleet, campaign, present)
    _confirm(fleet, campaign, wave0)
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "advance", ticked.decision.reason
    rest = set(_offered_to(fleet, campaign, present)) - set(wave0)
    _confirm(fleet, campaign, rest)
    (ticked,) = fleet.tick(time.time())
    assert ticked.decision.action.value == "complete", ticked.decision.reason
    return campaign, ops, set(wave0) | rest


def _create_again(fleet: Fleet) -> tuple[str, FleetClient]:
    """A newer draft campaign of the same release and hardware (another release manager)."""
    rm = token(fleet.admin, "release-manager", "rose")
    made = rm.create_campaign(
        name="v2-again",
        targets=[V2],
        selector={"hardware_id": HW},
        compatible={HW: ["1.0.0"]},
        policy=POLICY,
    )
    return made["id"], rm


def test_a_completed_campaign_still_reaches_vehicles_that_missed_it_until_superseded(
    fleet: Fleet,
) -> None:
    late, later = fleet.devices[0], fleet.devices[1]  # parked while the campaign runs
    campaign, ops, _confirmed = _completed(fleet, fleet.devices[2:])
    # the parked vehicle comes back: offered the release its fleet got
    assert set(_offered_to(fleet, campaign, [late])) == {late.id}
    # a newer campaign for the same hardware speaks for it from then on, even paused
    newer, rm = _create_again(fleet)
    ops.campaign_action(newer, "approve")
    ops.campaign_action(newer, "start")
    ops.campaign_action(newer, "pause")
    body = fleet.check_in(later).json()
    assert body["campaign"] is None and V2 not in director_targets(body)
    # cancelled (its release stopped, not replaced): the completed campaign offers again
    ops.campaign_action(newer, "cancel")
    assert set(_offered_to(fleet, campaign, [later])) == {later.id}
    assert fleet.admin.campaign(campaign)["status"] == "completed"
    rm.close()
    ops.close()


def test_a_completed_campaign_halted_late_stops_reaching_stragglers(fleet: Fleet) -> None:
    """A fault found after completion: the halt stops the offers to vehicles that missed the
    campaign, and a straggler that was offered it since is told to abandon."""
    late, later = fleet.devices[0], fleet.devices[1]
    campaign, ops, confirmed_devices = _completed(fleet, fleet.devices[2:])
    assert set(_offered_to(fleet, campaign, [late])) == {late.id}  # a straggler, in flight
    halted = ops.campaign_action(campaign, "halt", reason="late field reports")
    assert halted["status"] == "halted"
    assert halted["end_reason"] == "halted by otto after completion: late field reports"
    body = fleet.check_in(late).json()
    assert body["actions"] == [{"kind": "abandon", "campaign": campaign}]
    assert V2 not in director_targets(body)
    body = fleet.check_in(later).json()  # never offered now
    assert body["campaign"] is None and V2 not in director_targets(body)
    confirmed = sum(w["confirmed"] for w in fleet.admin.campaign(campaign)["waves"])
    assert confirmed == len(confirmed_devices)  # who confirmed keeps it, and stays counted
    ops.close()


def test_a_campaign_made_in_the_same_second_still_supersedes_a_completed_one(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'Created after' is creation order, not the second nor the random id: a newer campaign
    made within the second of a completed one, with an id that sorts first, still speaks for
    the hardware (the CI once saw the older release offered again)."""
    import secrets
    import types

    from sqlalchemy import update

    from otaguard.server.models import Campaign
    from otaguard.server.services import campaigns as service

    ids = iter(["ffffffffffff", "000000000000"])  # the newer one's id sorts first
    fake = types.SimpleNamespace(
        token_hex=lambda n=None: next(ids) if n == 6 else secrets.token_hex(n),
        token_bytes=secrets.token_bytes,
    )
    monkeypatch.setattr(service, "secrets", fake)
    late = fleet.devices[0]
    campaign, ops, _confirmed = _completed(fleet, fleet.devices[1:])
    newer, rm = _create_again(fleet)
    assert (campaign, newer) == ("c-ffffffffffff", "c-000000000000")
    with fleet.db.writing() as session:  # made within the same second
        made = session.get(Campaign, campaign).created_at  # type: ignore[union-attr]
        session.execute(update(Campaign).where(Campaign.id == newer).values(created_at=made))
    ops.campaign_action(newer, "approve")
    ops.campaign_action(newer, "start")
    ops.campaign_action(newer, "pause")
    body = fleet.check_in(late).json()
    assert body["campaign"] is None and V2 not in director_targets(body)
    rm.close()
    ops.close()
