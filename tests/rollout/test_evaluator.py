"""The campaign state machine, event by event: rules, stamps, kill switch, soak, persistence."""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import otaguard.rollout
from otaguard.errors import CampaignStateError, TwoPersonRuleError
from otaguard.rollout import (
    DEFAULT,
    Action,
    Approve,
    CampaignCounters,
    Cancel,
    FailureClass,
    Halt,
    HealthReport,
    HealthTally,
    Pause,
    Resume,
    Stage,
    Start,
    Status,
    Tick,
    Transition,
    WaveCounters,
    create,
    parse_policy,
    retry_after,
    state_from_dict,
    state_to_dict,
    step,
)

POLICY = parse_policy(
    "[waves]\nfractions = [0.1, 1.0]\nmin_devices = 10\nmin_soak_s = 100\n"
    "[advance]\nmin_confirmed = 10\n[halt]\nfailure_threshold = 0.1\n"
    "acceptable_failure_rate = 0.02\nconfidence = 0.95\nmin_sample = 10\n"
    "[health]\nrates = []\n"
)


def _running(now: float = 0.0):
    state = create("c1", POLICY, 1000, by="alice", now=now)
    state, _ = step(state, Approve("bob"), now)
    state, _ = step(state, Start("alice"), now)
    return state


def _wave(confirmed: int = 0, failed: int = 0, in_flight: int = 0, silent: int = 0) -> WaveCounters:
    c = WaveCounters().add(
        Transition(None, Stage.DOWNLOADING), confirmed + failed + in_flight + silent
    )
    c = c.add(Transition(Stage.DOWNLOADING, Stage.INSTALLED), confirmed)
    c = c.add(Transition(Stage.INSTALLED, Stage.CONFIRMED), confirmed)
    c = c.add(Transition(Stage.DOWNLOADING, Stage.FAILED, FailureClass.INSTALL), failed)
    return c.add(Transition(Stage.DOWNLOADING, Stage.SILENT), silent)


def _tick(state, *waves: WaveCounters, now: float, control: HealthTally | None = None):
    return step(state, Tick(CampaignCounters(tuple(waves), control or HealthTally())), now)


def test_the_creator_cannot_approve_their_own_campaign() -> None:
    state = create("c1", POLICY, 1000, by="alice", now=10.0)
    with pytest.raises(TwoPersonRuleError) as info:
        step(state, Approve("alice"), 20.0)
    assert info.value.check == "two-person" and info.value.exit_code == 1
    state, decision = step(state, Approve("bob"), 20.0)
    assert state.status is Status.APPROVED
    assert (state.created.by, state.approved.by, state.approved.at) == ("alice", "bob", 20.0)  # type: ignore[union-attr]
    assert decision.action is Action.APPROVE and decision.by == "bob"


@pytest.mark.parametrize(
    "status_event",
    [
        ("draft", Start("bob")),
        ("draft", Halt("bob")),
        ("draft", Resume("bob")),
        ("running", Approve("carol")),
        ("running", Resume("bob")),
        ("running", Start("bob")),
    ],
)
def test_events_out_of_order_are_refused(status_event: tuple[str, object]) -> None:
    status, event = status_event
    state = create("c1", POLICY, 1000, by="alice", now=0.0) if status == "draft" else _running()
    with pytest.raises(CampaignStateError):
        step(state, event, 1.0)  # type: ignore[arg-type]


def test_an_event_needs_an_identity() -> None:
    with pytest.raises(CampaignStateError):
        step(create("c1", POLICY, 1000, by="alice", now=0.0), Approve("  "), 1.0)


def test_kill_switch_halts_at_once_and_for_good() -> None:
    state = _running()
    assert state.offering == 0
    state, decision = step(state, Halt("carol", "field reports"), 50.0)
    assert state.status is Status.HALTED and decision.action is Action.HALT
    assert state.offering is None and state.revert_trial
    assert (state.ended.by, state.ended.at) == ("carol", 50.0)  # type: ignore[union-attr]
    assert "field reports" in (state.end_reason or "")
    for event in (Resume("carol"), Start("carol"), Halt("carol"), Cancel("carol")):
        with pytest.raises(CampaignStateError):
            step(state, event, 60.0)
    # a tick with perfect figures does nothing to a halted campaign
    after, decision = _tick(state, _wave(confirmed=100), now=10_000.0)
    assert after == state and decision.action is Action.NONE


def test_revert_on_halt_is_a_policy_choice() -> None:
    policy = parse_policy(
        POLICY.to_toml().replace("revert_on_halt = true", "revert_on_halt = false")
    )
    state = create("c1", policy, 1000, by="alice", now=0.0)
    state, _ = step(state, Approve("bob"), 0.0)
    state, _ = step(state, Start("bob"), 0.0)
    state, _ = step(state, Halt("bob"), 1.0)
    assert state.status is Status.HALTED and not state.revert_trial


def test_pause_stops_offers_and_the_soak_clock() -> None:
    state = _running()
    state, _ = step(state, Pause("bob"), 60.0)
    assert state.offering is None and state.soak(1000.0) == 60.0
    # paused: perfect figures do not advance
    paused, decision = _tick(state, _wave(confirmed=100), now=1000.0)
    assert paused.status is Status.PAUSED and decision.action is Action.NONE
    state, _ = step(state, Resume("bob"), 1000.0)
    assert state.offering == 0 and state.soak(1030.0) == 90.0
    _, decision = _tick(state, _wave(confirmed=100), now=1030.0)
    assert decision.action is Action.NONE and "soaked 90 of 100 s" in decision.reason
    state, decision = _tick(state, _wave(confirmed=100), now=1040.0)
    assert decision.action is Action.ADVANCE and state.wave == 1 and state.offering == 1


def test_a_paused_campaign_can_still_be_halted_by_its_figures() -> None:
    state, _ = step(_running(), Pause("bob"), 10.0)
    state, decision = _tick(state, _wave(confirmed=20, failed=30), now=20.0)
    assert state.status is Status.HALTED and decision.action is Action.HALT


def test_a_clock_going_back_adds_no_soak() -> None:
    state = _running(now=1000.0)
    _, decision = _tick(state, _wave(confirmed=100), now=10.0)
    assert decision.action is Action.NONE


def test_advance_then_complete_with_figures_for_the_audit_log() -> None:
    state = _running()
    state, decision = _tick(state, _wave(confirmed=100), now=100.0)
    assert decision.action is Action.ADVANCE and decision.wave == 1
    advance = decision.failure[1]
    assert advance.view == "advance" and advance.signal and advance.n == 100
    assert advance.wilson is not None and advance.wilson < 0.1
    state, decision = _tick(state, _wave(confirmed=100), _wave(confirmed=900), now=150.0)
    assert decision.action is Action.NONE  # wave 1 has soaked only 50 s
    state, decision = _tick(state, _wave(confirmed=100), _wave(confirmed=900), now=200.0)
    assert state.status is Status.COMPLETED and decision.action is Action.COMPLETE
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["action"] == "complete" and record["failure"][1]["waves"] == "0-1"


def test_in_flight_devices_block_an_advance() -> None:
    state = _running()
    _, decision = _tick(state, _wave(confirmed=60, in_flight=40), now=500.0)
    assert decision.action is Action.NONE and "failed or in flight" in decision.reason


def test_min_confirmed_is_capped_by_the_wave_size() -> None:
    policy = parse_policy(POLICY.to_toml().replace("min_confirmed = 10", "min_confirmed = 5000"))
    state = create("c1", policy, 1000, by="a", now=0)
    state, _ = step(state, Approve("b"), 0)
    state, _ = step(state, Start("b"), 0)
    _, decision = _tick(state, _wave(confirmed=100), now=100.0)
    assert decision.action is Action.ADVANCE


def test_a_settled_wave_smaller_than_planned_advances_on_its_own_outcomes() -> None:
    # planned 100 (0.1 of 1000), but the keyed hash put only 90 devices in the wave
    policy = parse_policy(POLICY.to_toml().replace("min_confirmed = 10", "min_confirmed = 5000"))
    state = create("c1", policy, 1000, by="a", now=0)
    state, _ = step(state, Approve("b"), 0)
    state, _ = step(state, Start("b"), 0)
    _, decision = _tick(state, _wave(confirmed=90), now=50.0)
    assert decision.action is Action.NONE and "soaked" in decision.reason  # not before the soak
    _, decision = _tick(state, _wave(confirmed=89, in_flight=1), now=100.0)
    assert decision.action is Action.NONE  # one device still in flight
    _, decision = _tick(state, _wave(confirmed=90), now=100.0)
    assert decision.action is Action.ADVANCE
    # the failure-rate bound still decides: a settled wave of 3 shows nothing below 10 %
    _, decision = _tick(state, _wave(confirmed=3), now=100.0)
    assert decision.action is Action.NONE and "not yet shown below" in decision.reason
    # nor does a settled wave with no confirmation at all
    _, decision = _tick(state, WaveCounters(), now=100.0)
    assert decision.action is Action.NONE


def test_silent_devices_are_failures() -> None:
    state = _running()
    # 60 confirmed and 40 silent: the halt view counts the silent as failed
    halted, decision = _tick(state, _wave(confirmed=60, silent=40), now=50.0)
    assert halted.status is Status.HALTED
    assert decision.failure[0].k == 40 and decision.failure[0].n == 100


def test_no_halt_below_the_minimum_sample() -> None:
    state = _running()
    # 5 failures of 9 offered: the bound is far above 10 %, but only 9 outcomes < 10
    _, decision = _tick(state, _wave(confirmed=4, failed=5), now=50.0)
    assert decision.action is Action.NONE
    assert not decision.failure[0].passed_min_sample


def test_health_worse_than_control_halts() -> None:
    health = dataclasses.replace(DEFAULT.health, min_devices=20, confidence=0.99)
    policy = dataclasses.replace(POLICY, health=health)
    state = create("c1", policy, 10_000, by="a", now=0)
    state, _ = step(state, Approve("b"), 0)
    state, _ = step(state, Start("b"), 0)
    wave = _wave(confirmed=100)
    treated = HealthTally().add(HealthReport(3600.0, counts={"resets": 1, "crashes": 0}), count=100)
    control = HealthTally().add(
        HealthReport(3600.0, counts={"resets": 0, "crashes": 0}), count=5000
    )
    control = control.add(HealthReport(0.0, counts={"resets": 250}, new_device=False))
    sick = wave.__class__(**{**wave.__dict__, "health": treated})
    halted, decision = _tick(state, sick, now=50.0, control=control)
    assert halted.status is Status.HALTED and "health resets" in decision.reason
    figures = next(h for h in decision.health if h.check == "resets")
    assert figures.worse and figures.devices == 100 and figures.control_devices == 5000
    # the same resets at the control's rate do not halt
    calm = HealthTally().add(HealthReport(3600.0, counts={"resets": 0}), count=100)
    calm = calm.add(HealthReport(0.0, counts={"resets": 5}, new_device=False))
    well = wave.__class__(**{**wave.__dict__, "health": calm})
    state2, decision = _tick(state, well, now=50.0, control=control)
    assert state2.status is Status.RUNNING


def test_counters_from_an_unopened_wave_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not open"):
        _tick(_running(), _wave(confirmed=1), _wave(confirmed=1), now=5.0)


def test_retry_only_transient_failures() -> None:
    assert retry_after(DEFAULT, FailureClass.NETWORK, 1) == 60.0
    assert retry_after(DEFAULT, FailureClass.POWER, 3) == 240.0
    assert retry_after(DEFAULT, FailureClass.POWER, 5) is None  # attempts used up
    for deterministic in (
        FailureClass.VERIFICATION,
        FailureClass.INCOMPATIBLE,
        FailureClass.INSTALL,
        FailureClass.BOOT,
    ):
        assert retry_after(DEFAULT, deterministic, 1) is None


_EVENTS = st.sampled_from(["approve", "start", "pause", "resume", "cancel", "halt", "tick"])


def test_a_completed_campaign_can_still_be_halted() -> None:
    """Completed, it still offers to vehicles that missed it; a fault found late stops that."""
    state = dataclasses.replace(_running(), status=Status.COMPLETED, running_since=None)
    assert state.offering is not None
    state, decision = step(state, Halt("carol", "late field reports"), 90.0)
    assert state.status is Status.HALTED and decision.action is Action.HALT
    assert state.offering is None and state.revert_trial
    assert state.end_reason == "halted by carol after completion: late field reports"
    for event in (Pause("carol"), Resume("carol"), Cancel("carol")):
        with pytest.raises(CampaignStateError):
            step(dataclasses.replace(state, status=Status.COMPLETED), event, 95.0)


@given(st.lists(st.tuples(_EVENTS, st.sampled_from(["alice", "bob"])), max_size=12))
def test_any_event_sequence_keeps_a_valid_state_that_persists(
    events: list[tuple[str, str]],
) -> None:
    state = create("c1", POLICY, 1000, by="alice", now=0.0)
    now = 0.0
    for name, who in events:
        now += 60.0
        event = {
            "approve": Approve(who), "start": Start(who), "pause": Pause(who),
            "resume": Resume(who), "cancel": Cancel(who), "halt": Halt(who),
            "tick": Tick(CampaignCounters((_wave(confirmed=50),))),
        }[name]  # fmt: skip
        try:
            state, _ = step(state, event, now)  # type: ignore[arg-type]
        except (CampaignStateError, TwoPersonRuleError, ValueError):
            continue
        assert state.approved is None or state.approved.by != state.created.by
        offers = state.status in (Status.RUNNING, Status.COMPLETED)
        assert (state.offering is not None) == offers
        data = json.loads(json.dumps(state_to_dict(state)))
        assert state_from_dict(data) == state


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(status="exploded"),
        lambda d: d.update(wave=7),
        lambda d: d["plan"].update(cumulative=[5, 3]),
        lambda d: d["plan"].update(thresholds=[1, 2]),
        lambda d: d.update(created=None),
        lambda d: d["policy"]["halt"].update(confidence=3),
        lambda d: d.update(soaked_s="x"),
    ],
)
def test_damaged_stored_state_is_refused(damage: object) -> None:
    data = state_to_dict(_running())
    damage(data)  # type: ignore[operator]
    with pytest.raises(CampaignStateError):
        state_from_dict(data)


def test_rollout_imports_only_the_standard_library_and_errors() -> None:
    """The server must not need NumPy or SciPy for the evaluator (docs/rollout.md)."""
    root = Path(otaguard.rollout.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"otaguard"}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("otaguard."):
                    assert name.split(".")[1] in {"errors", "rollout"}, f"{path.name}: {name}"
