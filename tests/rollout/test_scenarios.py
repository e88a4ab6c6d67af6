"""Whole campaigns against the evaluator, and proof that the scenarios catch a broken one.

Each scenario drives a campaign (the scripted fleet of helpers_rollout, reporting one device
at a time as the server will, or the NumPy simulator) and asserts what the issue demands. The
second half breaks the evaluator on purpose, in the ways a plausible implementation goes
wrong (a raw failure ratio, no minimum sample, silent devices not counted, health ignored,
devices in flight ignored, a kill switch that only pauses, the wrong side of the bound), and
shows that at least the scenario written for that mistake now fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from helpers_rollout import (
    CONFIRMED,
    DL,
    FAILED,
    INSTALLED,
    Step,
    fails_install,
    mix,
    run,
    succeeds,
)
from otaguard.rollout import (
    Action,
    FailureClass,
    Halt,
    Pause,
    Status,
    WaveCounters,
    checks,
    evaluator,
    stats,
)
from otaguard.sim import FleetModel, simulate

GOOD = mix(0.005, fails_install)


def good_release_completes() -> None:
    result = run(GOOD)
    assert result.state.status is Status.COMPLETED, result.state.end_reason
    assert result.opened == result.state.plan.waves == 3
    assert result.actions().count(Action.ADVANCE) == 2
    assert result.exposed >= 0.98 * sum(result.wave_sizes)


def bad_release_halted_in_first_wave() -> None:
    result = run(mix(0.2, fails_install))
    assert result.state.status is Status.HALTED
    assert result.state.wave == 0 and Action.ADVANCE not in result.actions()
    assert result.exposed <= result.wave_sizes[0]
    assert "failure rate above" in (result.state.end_reason or "")


def early_failures_do_not_halt_a_good_release() -> None:
    # Offers trickle in (two hours per wave) and the first two devices of each wave fail
    # within seconds, long before anyone confirms: 6 failures in 3,000 is a good release.
    def early(index: int, rank: int) -> list[Step]:
        if rank < 2:
            return [(10.0, DL, None), (30.0, FAILED, FailureClass.INSTALL)]
        return succeeds(index, rank)

    result = run(early, spread_s=7200.0)
    assert result.state.status is Status.COMPLETED, result.state.end_reason


def quick_devices_and_trickling_offers_complete() -> None:
    # devices confirm two minutes after the offer while offers trickle over two hours: the
    # first outcomes come from a small sample, where any bound is wide
    def quick(index: int, rank: int) -> list[Step]:
        if index % 200 == 3:
            return fails_install(index, rank)
        return [(10.0, DL, None), (60.0, INSTALLED, None), (120.0, CONFIRMED, None)]

    result = run(quick, spread_s=7200.0)
    assert result.state.status is Status.COMPLETED, result.state.end_reason


def silent_devices_count_as_failures() -> None:
    # 30 % of devices are never heard of after the offer; the rest succeed
    result = run(succeeds, silent=lambda index: index % 10 < 3)
    assert result.state.status is Status.HALTED, result.state.end_reason
    assert result.state.wave == 0
    assert result.counters[0].silent > 0 and result.counters[0].failed == 0


def health_worse_than_control_halts() -> None:
    result = run(GOOD, health_ratio=5.0)
    assert result.state.status is Status.HALTED
    assert result.state.wave == 0
    assert "health resets" in (result.state.end_reason or "")
    halt = next(d for d in result.decisions if d.action is Action.HALT)
    resets = next(h for h in halt.health if h.check == "resets")
    assert resets.worse and resets.p_value < 0.01 and resets.value > resets.control_value


def advance_waits_for_devices_in_flight() -> None:
    # 30 % of devices boot the release and fail only three hours later; the soak is one hour
    def late(index: int, rank: int) -> list[Step]:
        if index % 10 < 3:
            return [(60.0, DL, None), (1200.0, INSTALLED, None), (3 * 3600.0, FAILED, None)]
        return succeeds(index, rank)

    def late_failure(index: int, rank: int) -> list[Step]:
        steps = late(index, rank)
        return [(d, s, FailureClass.BOOT if s is FAILED else None) for d, s, _ in steps]

    result = run(late_failure)
    assert result.state.status is Status.HALTED, result.state.end_reason
    assert result.state.wave == 0, "advanced while devices were still in trial boot"


def kill_switch_halts_at_once() -> None:
    result = run(GOOD, events={1800.0: Halt("carol", "crash reports from the field")})
    state = result.state
    assert state.status is Status.HALTED
    assert state.ended is not None and (state.ended.by, state.ended.at) == ("carol", 1800.0)
    assert state.offering is None and state.revert_trial
    assert result.offers_after_halt == 0
    assert sum(c.reverted for c in result.counters) > 0  # devices in trial were told to revert
    assert Action.HALT in result.actions()


def sim_bad_release_halted_in_first_wave() -> None:
    result = simulate(FleetModel(devices=20_000, failure_rate=0.2, seed=3))
    assert result.halted and result.halt_wave == 0
    assert 0 < result.exposed <= result.installed <= result.waves[0]["devices"]


def sim_good_release_completes() -> None:
    result = simulate(FleetModel(devices=20_000, failure_rate=0.005, seed=3))
    assert result.status == "completed" and not result.halted
    assert all(w["opened_at_s"] is not None for w in result.waves)


SCENARIOS: list[Callable[[], None]] = [
    good_release_completes,
    bad_release_halted_in_first_wave,
    early_failures_do_not_halt_a_good_release,
    quick_devices_and_trickling_offers_complete,
    silent_devices_count_as_failures,
    health_worse_than_control_halts,
    advance_waits_for_devices_in_flight,
    kill_switch_halts_at_once,
    sim_bad_release_halted_in_first_wave,
    sim_good_release_completes,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_scenario(scenario: Callable[[], None]) -> None:
    scenario()


# --- the same scenarios against deliberately broken evaluators ---------------------------


def _raw_ratio(mp: pytest.MonkeyPatch) -> None:
    """Halt on failures / outcomes above the threshold, as hawkBit-like rules do."""
    real = checks.halt_test

    def broken(policy, wave, counters):
        figures = real(policy, wave, counters)
        ratio = counters.failures / counters.outcomes if counters.outcomes else 0.0
        signal = figures.passed_min_sample and ratio > policy.halt.failure_threshold
        return dataclasses.replace(figures, signal=signal)

    mp.setattr(checks, "halt_test", broken)


def _no_min_sample(mp: pytest.MonkeyPatch) -> None:
    real = checks.halt_test

    def broken(policy, wave, counters):
        loose = dataclasses.replace(policy, halt=dataclasses.replace(policy.halt, min_sample=1))
        return real(loose, wave, counters)

    mp.setattr(checks, "halt_test", broken)


def _silent_ignored(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(WaveCounters, "failures", property(lambda self: self.failed))


def _health_ignored(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(checks, "health_tests", lambda *args: ())


def _in_flight_ignored(mp: pytest.MonkeyPatch) -> None:
    """Judge only devices with an outcome, as if those in flight did not exist."""
    mp.setattr(WaveCounters, "in_flight", property(lambda self: 0))


def _halt_is_pause(mp: pytest.MonkeyPatch) -> None:
    real = evaluator.step

    def broken(state, event, now):
        return real(state, Pause(event.by) if isinstance(event, Halt) else event, now)

    mp.setattr(evaluator, "step", broken)


def _upper_bound_halts(mp: pytest.MonkeyPatch) -> None:
    """Halt when the *upper* bound is above the threshold: "it could be bad"."""
    mp.setattr(stats, "wilson_lower", stats.wilson_upper)


BREAKAGES = {
    "raw-ratio": (_raw_ratio, early_failures_do_not_halt_a_good_release),
    "no-min-sample": (_no_min_sample, early_failures_do_not_halt_a_good_release),
    "silent-ignored": (_silent_ignored, silent_devices_count_as_failures),
    "health-ignored": (_health_ignored, health_worse_than_control_halts),
    "in-flight-ignored": (_in_flight_ignored, advance_waits_for_devices_in_flight),
    "halt-is-pause": (_halt_is_pause, kill_switch_halts_at_once),
    "upper-bound-halts": (_upper_bound_halts, quick_devices_and_trickling_offers_complete),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_scenarios_catch_a_broken_evaluator(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    breakage, catcher = BREAKAGES[name]
    breakage(monkeypatch)
    caught = []
    for scenario in SCENARIOS:
        try:
            scenario()
        except AssertionError:
            caught.append(scenario.__name__)
    assert catcher.__name__ in caught, f"{name}: caught only by {caught}"
