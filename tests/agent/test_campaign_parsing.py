"""Campaign fields of a check-in answer, push payloads, and the state machine's campaign inputs."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.agent import machine as m
from otaguard.agent.api import Action, CampaignRef, Push, _update_answer
from otaguard.agent.config import Failure, config_from_json
from otaguard.agent.failures import TransientError
from otaguard.agent.push import MAX_SPREAD_S, Wake, broker_address, spread_of
from otaguard.agent.state import (
    Health,
    InFlight,
    Phase,
    Plan,
    PlannedTarget,
    Result,
    State,
    parse,
)

AT = "2026-12-03T12:00:00Z"
BASE = "http://server.example"
GOOD = {
    "etag": "e1",
    "director": base64.b64encode(b"{}").decode(),
    "repository": {"metadata_url": "/m/", "targets_url": "/t/"},
}


def _answer(extra: dict[str, Any]) -> Any:
    return _update_answer({**GOOD, **extra}, httpx.Response(200), "ab" * 16, BASE)


def test_campaign_actions_and_push_are_read() -> None:
    answer = _answer(
        {
            "campaign": {"id": "camp-1", "wave": 3},
            "actions": [
                {"kind": "abandon", "campaign": "camp-1"},
                {"kind": "future-kind", "campaign": "camp-1"},  # a newer server's: left out
            ],
            "push": {"broker": "mqtt://127.0.0.1:1883", "topics": ["otaguard/v1/devices/V1"]},
        }
    )
    assert answer.campaign == CampaignRef("camp-1", 3)
    assert answer.actions == (Action("abandon", "camp-1"),)
    assert answer.push == Push("mqtt://127.0.0.1:1883", ("otaguard/v1/devices/V1",))
    assert answer.wants("abandon", "camp-1") and not answer.wants("revert", "camp-1")
    assert not answer.wants("abandon", None)
    plain = _answer({})
    assert (plain.campaign, plain.actions, plain.push) == (None, (), None)


@pytest.mark.parametrize(
    "extra",
    [
        {"campaign": "camp-1"},
        {"campaign": {"id": "bad id", "wave": 0}},
        {"campaign": {"id": "c", "wave": -1}},
        {"campaign": {"id": "c", "wave": True}},
        {"actions": {"kind": "abandon"}},
        {"actions": [{"kind": "abandon", "campaign": "../x"}]},
        {"actions": [{"kind": "abandon", "campaign": "c"}] * 17},
        {"actions": ["abandon"]},
        {"push": {"broker": "http://x", "topics": []}},
        {"push": {"broker": None, "topics": ["other/topic"]}},
        {"push": {"broker": None, "topics": ["otaguard/v1/#"]}},
        {"push": "mqtt://x"},
    ],
)
def test_malformed_campaign_fields_are_a_bad_response(extra: dict[str, Any]) -> None:
    with pytest.raises(TransientError) as info:
        _answer(extra)
    assert info.value.failure is Failure.BAD_RESPONSE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_push_payload_is_a_bounded_spread(payload: bytes) -> None:
    spread = spread_of(payload, 7.0)
    assert 0.0 <= spread <= MAX_SPREAD_S


@pytest.mark.parametrize(
    ("payload", "spread"),
    [
        (b'{"v": 1, "reason": "halt", "campaign": "c", "spread_s": 0}', 0.0),
        (b'{"v": 1, "reason": "start", "campaign": "c", "spread_s": 120}', 120.0),
        (b'{"v": 1, "spread_s": 1e9}', MAX_SPREAD_S),
        (b'{"v": 1, "spread_s": -5}', 0.0),
        (b'{"v": 1, "spread_s": NaN}', 7.0),
        (b'{"v": 2, "spread_s": 0}', 7.0),
        (b"garbage", 7.0),
        (b"x" * 5000, 7.0),
    ],
)
def test_push_payloads(payload: bytes, spread: float) -> None:
    assert spread_of(payload, 7.0) == spread


def test_wake_keeps_the_smallest_spread_until_taken() -> None:
    wake = Wake()
    assert wake.wait(0.0) is None
    wake.ring(30.0)
    wake.ring(0.0)
    wake.ring(10.0)
    assert wake.wait(0.0) == 0.0 and wake.rings == 3
    wake.take()
    assert not wake.is_set() and wake.wait(0.0) is None


def test_broker_address() -> None:
    assert broker_address("mqtt://127.0.0.1:1883") == ("127.0.0.1", 1883)
    assert broker_address("mqtt://broker") == ("broker", 1883)
    with pytest.raises(ValueError, match="mqtt"):
        broker_address("https://broker")


def test_config_campaign_settings() -> None:
    config = config_from_json({"health_window_s": 60, "mqtt": False, "trial_checkin": False})
    assert (config.health_window_s, config.mqtt, config.trial_checkin) == (60.0, False, False)
    for bad in ({"mqtt": 1}, {"health_window_s": 0}, {"health_window_s": 8 * 86400}):
        with pytest.raises(ValueError):
            config_from_json(bad)


PLAN = Plan(
    etag="e",
    nonce="ab" * 16,
    director=b"{}",
    director_version=1,
    metadata_url="m",
    targets_url="t",
    targets=(PlannedTarget("main", "hw/2.img", 10, {"sha256": "00" * 32}),),
    campaign="camp-1",
)


def test_machine_in_flight_abandon_and_restarts() -> None:
    state = m.step(State(salt="ab" * 16), m.Planned(AT, PLAN, None))
    assert state.inflight == InFlight("camp-1", "download", (("main", "hw/2.img"),))
    assert state.outbox[-1].campaign == "camp-1"
    for inp in (m.Recheck(AT), m.Restarted(AT)):
        idle = m.step(state, inp)
        assert idle.phase is Phase.IDLE and idle.inflight == state.inflight  # still in flight
    idle = m.step(state, m.Recheck(AT))
    with pytest.raises(m.InvalidTransition):
        m.step(idle, m.Abandoned(AT, "camp-other"))
    with pytest.raises(m.InvalidTransition):
        m.step(idle, m.Recheck(AT))  # only a download is interrupted
    done = m.step(idle, m.Abandoned(AT, "camp-1"))
    assert (done.phase, done.result, done.inflight, done.etag) == (
        Phase.REPORT,
        Result.ABANDONED,
        None,
        None,
    )
    record = done.outbox[-1]
    assert (record.kind, record.campaign, record.target) == ("abandoned", "camp-1", "hw/2.img")
    installing = m.step(state, m.Downloaded(AT, PLAN.targets))
    installed = m.step(installing, m.Installed_(AT, "b"))
    assert installed.inflight is not None and installed.inflight.stage == "install"
    with pytest.raises(m.InvalidTransition):
        m.step(m.step(installed, m.Booted(AT)), m.Abandoned(AT, "camp-1"))


def test_machine_incompatible_keeps_the_answer_and_health_windows() -> None:
    state = State(salt="ab" * 16)
    out = m.step(state, m.Incompatible(AT, "slot-size", "too big", "e9", "c", PLAN.targets))
    assert (out.phase, out.etag, out.result) == (Phase.REPORT, "e9", Result.INCOMPATIBLE)
    assert (out.outbox[-1].kind, out.outbox[-1].failure) == ("incompatible", "deterministic")
    seen = m.step(m.step(state, m.BootSeen(AT, 2)), m.BootSeen(AT, 0))
    assert seen.health == Health(AT, None, 2, 2)
    assert m.step(seen, m.HealthSent("later")).health == Health("later")


def test_state_with_campaign_fields_round_trips_and_old_files_load() -> None:
    state = m.step(State(salt="ab" * 16), m.Planned(AT, PLAN, None))
    state = m.step(state, m.BootSeen(AT, 1))
    assert parse(state.to_bytes()) == state
    old = json.loads(State(salt="ab" * 16).to_bytes())
    del old["inflight"], old["health"]
    assert parse(json.dumps(old).encode()) == State(salt="ab" * 16)
    bad = json.loads(state.to_bytes())
    bad["inflight"]["stage"] = "flying"
    with pytest.raises(Exception, match="agent state"):
        parse(json.dumps(bad).encode())
