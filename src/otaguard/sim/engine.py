"""The simulation loop: the real campaign evaluator, ticked over simulated time.

The evaluator sees exactly what the server gives it: per-wave counters and the control tally
(built here with ``WaveCounters.add``, as the server's reports would build them) and ``now``.
Nothing of the fleet model reaches it. Each tick:

1. every opened wave's counters at time t (binary searches in the wave's sorted event times,
   so a tick costs O(waves x kinds x log n), not O(fleet));
2. the control group (devices not yet offered) adds its exposure and Poisson events;
3. ``evaluator.step(state, Tick(counters), t)``; on ``advance`` the next wave's devices are
   drawn (:func:`otaguard.sim.fleet.open_wave`), on ``halt`` or ``complete`` the loop ends.

After a halt each offered device learns of it at its next check-in: a download still running
then is abandoned, a device in trial boot is told to revert (``halt.revert_on_halt``), and one
that finished downloading before its check-in installs anyway: it is counted in ``installed``
but not in ``exposed`` (the devices that ran the release before the halt). With
``FleetModel.install_gate`` the agent checks in between download and install, so only the
devices whose download ended before the halt still install.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otaguard.rollout import (
    DEFAULT,
    Action,
    Approve,
    CampaignCounters,
    CampaignState,
    Decision,
    HealthReport,
    HealthTally,
    Policy,
    Start,
    Tick,
    WaveCounters,
    create,
    evaluator,
)
from otaguard.sim.cohorts import wave_sizes
from otaguard.sim.fleet import FleetModel, WaveTimeline, open_wave, residual_wait

Step = Callable[[CampaignState, Any, float], tuple[CampaignState, Decision]]


@dataclass
class Series:
    """Cumulative figures at each tick (and after a halt), for the plot."""

    t: list[float] = field(default_factory=list)
    offered: list[int] = field(default_factory=list)
    installed: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def add(self, t: float, offered: int, installed: int, confirmed: int, failed: int) -> None:
        self.t.append(t)
        self.offered.append(offered)
        self.installed.append(installed)
        self.confirmed.append(confirmed)
        self.failed.append(failed)


@dataclass(frozen=True)
class SimResult:
    devices: int
    seed: int
    failure_rate: float
    silent_rate: float
    status: str
    reason: str | None
    halted: bool
    halt_wave: int | None
    exposed: int
    installed: int
    reverted: int
    abandoned: int
    time_to_halt_s: float | None
    time_to_complete_s: float | None
    waves: tuple[dict[str, Any], ...]
    decisions: tuple[dict[str, Any], ...]
    series: Series

    def to_json(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "series"
        }
        out["waves"] = list(self.waves)
        out["decisions"] = list(self.decisions)
        return out


def cohort_key(seed: int) -> bytes:
    """The simulated campaign's cohort key (a server draws one at random per campaign)."""
    return hashlib.sha256(b"otaguard sim cohort key %d" % seed).digest()


def _wave_counters(timeline: WaveTimeline, t: float, window_s: float) -> WaveCounters:
    counters = WaveCounters()
    for report, times in timeline.events:
        count = int(np.searchsorted(times, t, side="right"))
        if count:
            counters = counters.add(report, count)
    reported = int(np.searchsorted(timeline.health_times, t, side="right"))
    if reported:
        health = HealthTally(
            devices=reported,
            exposure_s=reported * window_s,
            counts={
                "resets": int(timeline.health_resets[reported - 1]),
                "crashes": int(timeline.health_crashes[reported - 1]),
            },
        )
        counters = dataclasses.replace(counters, health=health)
    return counters


def _count_le(sorted_times: np.ndarray[Any, Any], t: float) -> int:
    return int(np.searchsorted(sorted_times, t, side="right"))


def _control_tick(rng: np.random.Generator, model: FleetModel, offered: int) -> HealthReport:
    """What the devices not yet offered report over one tick (their baseline health)."""
    exposure = (model.devices - offered) * model.tick_s
    reset_rate = model.reset_rate_per_day / 86400.0
    crash_rate = model.crash_rate_per_day / 86400.0
    return HealthReport(
        exposure,
        counts={
            "resets": int(rng.poisson(reset_rate * exposure)),
            "crashes": int(rng.poisson(crash_rate * exposure)),
        },
        new_device=False,
    )


def simulate(model: FleetModel, policy: Policy = DEFAULT, *, step: Step | None = None) -> SimResult:
    """Run one campaign over the simulated fleet; ``step`` defaults to the real evaluator
    (tests pass deliberately broken ones to show the scenarios catch them)."""
    step = step or evaluator.step
    rng = np.random.default_rng(model.seed)
    campaign_id = f"sim-{model.seed}"
    state = create(campaign_id, policy, model.devices, by="release-manager", now=0.0)
    state, _ = step(state, Approve("safety-officer"), 0.0)
    state, _ = step(state, Start("release-manager"), 0.0)
    sizes = wave_sizes(cohort_key(model.seed), campaign_id, state.plan)
    timelines = [open_wave(rng, model, policy, int(sizes[0]), 0.0)]
    installed_sorted = [np.sort(timelines[0].installed)]
    control = HealthTally().add(HealthReport(0.0), count=model.devices)
    window = policy.health.window_s
    series = Series()
    decisions: list[dict[str, Any]] = []
    opened_at = [0.0]
    settled: list[tuple[float, WaveCounters | None]] = [(timelines[0].settled_at(), None)]
    t = 0.0
    decision: Decision | None = None
    while t < model.horizon_s:
        t += model.tick_s
        counted = []
        for index, tl in enumerate(timelines):
            at, cached = settled[index]
            if cached is None:
                cached = _wave_counters(tl, t, window)
                # a wave whose last event is past keeps these counters: no more searching
                settled[index] = (at, cached if t > at else None)
            counted.append(cached)
        waves = tuple(counted)
        offered = sum(w.total for w in waves)
        # the control group: every device not yet offered reports health over this tick
        control = control.add(_control_tick(rng, model, offered))
        state, decision = step(state, Tick(CampaignCounters(waves, control)), t)
        series.add(
            t,
            offered,
            sum(_count_le(s, t) for s in installed_sorted),
            sum(w.confirmed for w in waves),
            sum(w.failures for w in waves),
        )
        if decision.action is not Action.NONE:
            decisions.append(decision.to_dict())
        if decision.action is Action.ADVANCE:
            timelines.append(open_wave(rng, model, policy, int(sizes[state.wave]), t))
            installed_sorted.append(np.sort(timelines[-1].installed))
            settled.append((timelines[-1].settled_at(), None))
            opened_at.append(t)
        if decision.action in (Action.HALT, Action.COMPLETE):
            break

    halted = decision is not None and decision.action is Action.HALT
    completed = decision is not None and decision.action is Action.COMPLETE
    reverted = abandoned = 0
    if halted:
        exposed, installed, reverted, abandoned = _after_halt(
            rng, model, policy, timelines, t, series
        )
    else:
        exposed = sum(_count_le(s, t) for s in installed_sorted)
        installed = sum(int(np.isfinite(tl.installed).sum()) for tl in timelines)
    return SimResult(
        devices=model.devices,
        seed=model.seed,
        failure_rate=model.failure_rate,
        silent_rate=model.silent_rate,
        status=state.status.value,
        reason=state.end_reason,
        halted=halted,
        halt_wave=state.wave if halted else None,
        exposed=exposed,
        installed=installed,
        reverted=reverted,
        abandoned=abandoned,
        time_to_halt_s=t if halted else None,
        time_to_complete_s=t if completed else None,
        waves=tuple(
            {
                "wave": i,
                "planned": state.plan.planned_size(i),
                "devices": int(sizes[i]),
                "opened_at_s": opened_at[i] if i < len(opened_at) else None,
            }
            for i in range(state.plan.waves)
        ),
        decisions=tuple(decisions),
        series=series,
    )


def _after_halt(
    rng: np.random.Generator,
    model: FleetModel,
    policy: Policy,
    timelines: list[WaveTimeline],
    halt: float,
    series: Series,
) -> tuple[int, int, int, int]:
    """What the offered devices do once they hear of the halt at their next check-in."""
    exposed = installed = reverted = abandoned = 0
    slipped_times = []
    for tl in timelines:
        notice = halt + residual_wait(rng, model, tl.size)
        offered = tl.offer <= halt
        reached = np.isfinite(tl.installed)
        before = reached & (tl.installed <= halt)
        # installs after the halt: the download ended before the device heard of it (with an
        # install gate, the device asks right after downloading: only downloads done by the halt)
        heard_by = np.full(tl.size, halt) if model.install_gate else notice
        slipped = offered & reached & ~before & (tl.downloaded <= heard_by)
        exposed += int(before.sum())
        installed += int(before.sum() + slipped.sum())
        slipped_times.append(tl.installed[slipped])
        in_trial = reached & (tl.installed <= notice) & (tl.outcome > notice)
        if policy.halt.revert_on_halt:
            reverted += int((offered & in_trial).sum())
        heard = tl.outcome_code >= 0  # silent devices never hear anything
        abandoned += int((offered & heard & (tl.downloaded > notice) & (tl.outcome > notice)).sum())
    late = np.sort(np.concatenate(slipped_times))
    # extend the curves until the last device has checked in (the longest poll interval)
    end = halt + model.poll_s * (1.0 + model.poll_jitter)
    t = halt
    while t < end:
        t += model.tick_s
        series.add(
            t,
            series.offered[-1],
            exposed + _count_le(late, t),
            series.confirmed[-1],
            series.failed[-1],
        )
    return exposed, installed, reverted, abandoned
