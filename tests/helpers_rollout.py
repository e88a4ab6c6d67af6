"""A scripted fleet that talks to the evaluator the way the server will, one report at a time.

Devices get waves from the real cohort rule, are offered while their wave is open (spread
over ``spread_s`` after it opens), then follow a script: ``behaviour(index, rank)`` returns
(delay after the offer, stage, failure class) steps. Every step is one ``WaveCounters.add``;
devices with no outcome by the deadline are swept to SILENT, as the server's sweep will; a
halt drops what a device had not yet installed and, with ``revert_on_halt``, reverts devices
in trial boot. The evaluator is looked up as ``evaluator.step`` at every call, so a test can
swap in a deliberately broken one.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from otaguard.rollout import (
    Action,
    Approve,
    CampaignCounters,
    CampaignState,
    CohortHasher,
    Decision,
    FailureClass,
    HealthReport,
    HealthTally,
    Policy,
    Stage,
    Start,
    Status,
    Tick,
    Transition,
    WaveCounters,
    create,
    evaluator,
    parse_policy,
)

#: A small fleet's policy: waves of about 300, 1,200 and 1,500 of 3,000 devices.
SMALL_POLICY = parse_policy(
    """
[waves]
fractions = [0.1, 0.5, 1.0]
min_devices = 100
min_soak_s = 3600

[advance]
min_confirmed = 100

[halt]
failure_threshold = 0.05
acceptable_failure_rate = 0.01
confidence = 0.95
min_sample = 20
deadline_s = 7200

[health]
min_devices = 50
confidence = 0.99
window_s = 1800
"""
)

Step = tuple[float, Stage, FailureClass | None]
Behaviour = Callable[[int, int], list[Step]]

DL, INSTALLED, CONFIRMED, FAILED = (
    Stage.DOWNLOADING,
    Stage.INSTALLED,
    Stage.CONFIRMED,
    Stage.FAILED,
)


def succeeds(index: int, rank: int) -> list[Step]:
    return [(60.0, DL, None), (1200.0, INSTALLED, None), (2400.0, CONFIRMED, None)]


def fails_install(index: int, rank: int) -> list[Step]:
    return [(60.0, DL, None), (600.0, FAILED, FailureClass.INSTALL)]


def mix(share: float, bad: Behaviour, good: Behaviour = succeeds) -> Behaviour:
    """Every 1/share-th device (by index) behaves ``bad``: a deterministic share."""
    period = round(1 / share)
    return lambda index, rank: bad(index, rank) if index % period == 3 else good(index, rank)


@dataclass
class Run:
    state: CampaignState
    decisions: list[Decision] = field(default_factory=list)
    wave_sizes: list[int] = field(default_factory=list)
    exposed: int = 0  # devices that booted the release (INSTALLED) before the halt
    offers_after_halt: int = 0
    counters: list[WaveCounters] = field(default_factory=list)

    @property
    def opened(self) -> int:
        """Waves opened (the last one's index + 1)."""
        return self.state.wave + 1

    def actions(self) -> list[Action]:
        return [d.action for d in self.decisions]


@dataclass
class _Device:
    index: int
    wave: int
    stage: Stage | None = None
    offered_at: float | None = None
    booted: bool = False


def run(
    behaviour: Behaviour,
    *,
    policy: Policy = SMALL_POLICY,
    population: int = 3000,
    spread_s: float = 1200.0,
    health_ratio: float = 1.0,
    silent: Callable[[int], bool] = lambda index: False,
    events: Mapping[float, object] | None = None,
    until_s: float = 16 * 3600.0,
    tick_s: float = 60.0,
    seed: int = 7,
) -> Run:
    """Drive one campaign from creation to its end (or ``until_s``)."""
    rng = random.Random(seed)
    state = create("scripted", policy, population, by="alice", now=0.0)
    state, _ = evaluator.step(state, Approve("bob"), 0.0)
    state, _ = evaluator.step(state, Start("alice"), 0.0)
    hasher = CohortHasher(b"scripted cohort key", "scripted")
    devices = [_Device(i, state.plan.wave_of(hasher.bucket(f"d{i}"))) for i in range(population)]
    by_wave: list[list[_Device]] = [[] for _ in range(state.plan.waves)]
    for device in devices:
        by_wave[device.wave].append(device)
    result = Run(state, wave_sizes=[len(w) for w in by_wave])
    counters = [WaveCounters() for _ in by_wave]
    control = HealthTally().add(HealthReport(0.0), count=population)
    reset_rate = 0.5 / 86400.0
    window = policy.health.window_s
    queue: list[tuple[float, int, int, Stage | None, FailureClass | None]] = []
    order = 0  # tie-breaker keeps the queue deterministic
    opened_at = {0: 0.0}
    pending = dict(events or {})
    next_rank = [0] * len(by_wave)
    offer_log: list[_Device] = []
    swept = 0
    halted_at: float | None = None
    t = 0.0

    def move(device: _Device, after: Stage, failure: FailureClass | None = None) -> None:
        counters[device.wave] = counters[device.wave].add(Transition(device.stage, after, failure))
        device.stage = after
        device.booted |= after is Stage.INSTALLED and halted_at is None

    while t < until_s:
        if state.ended is not None and t >= state.ended.at + 600.0:
            break  # ten more minutes of ticks show that an ended campaign stays ended
        t += tick_s
        for at in sorted(a for a in pending if a <= t):
            state, decision = evaluator.step(state, pending.pop(at), at)  # type: ignore[arg-type]
            result.decisions.append(decision)
            if decision.action is Action.HALT and halted_at is None:
                halted_at = at
        # offers, while the wave is being offered
        for wave, opened in opened_at.items():
            members = by_wave[wave]
            while next_rank[wave] < len(members):
                rank = next_rank[wave]
                if opened + spread_s * rank / len(members) > t:
                    break
                if state.offering is None or state.offering < wave:
                    break
                device = members[rank]
                next_rank[wave] += 1
                device.offered_at = t
                offer_log.append(device)
                if halted_at is not None:
                    result.offers_after_halt += 1
                move(device, Stage.OFFERED)
                if silent(device.index):
                    continue
                for delay, stage, failure in behaviour(device.index, rank):
                    order += 1
                    heapq.heappush(queue, (t + delay, order, device.index, stage, failure))
        # reports up to now, in time order
        while queue and queue[0][0] <= t:
            at, _, index, stage, failure = heapq.heappop(queue)  # type: ignore[assignment]
            device = devices[index]
            if stage is None:  # a health report
                resets = _poisson(rng, reset_rate * health_ratio * window)
                counters[device.wave] = counters[device.wave].add(
                    HealthReport(window, counts={"resets": resets, "crashes": 0})
                )
                continue
            if device.stage in (Stage.FAILED, Stage.CONFIRMED):
                continue
            move(device, stage, failure)
            if stage is Stage.CONFIRMED:
                order += 1
                heapq.heappush(queue, (at + window, order, index, None, None))
        # the server's sweep: no outcome by the deadline means silent (offers are in time
        # order, so each device is looked at once, when its deadline passes)
        while swept < len(offer_log):
            device = offer_log[swept]
            assert device.offered_at is not None
            if device.offered_at + policy.halt.deadline_s > t:
                break
            swept += 1
            if device.stage in (Stage.OFFERED, Stage.DOWNLOADING, Stage.INSTALLED):
                move(device, Stage.SILENT)
        exposure = (population - len(offer_log)) * tick_s
        control = control.add(
            HealthReport(
                exposure,
                counts={"resets": _poisson(rng, reset_rate * exposure), "crashes": 0},
                new_device=False,
            )
        )
        state, decision = evaluator.step(
            state, Tick(CampaignCounters(tuple(counters[: state.wave + 1]), control)), t
        )
        result.decisions.append(decision)
        if decision.action is Action.ADVANCE:
            opened_at[state.wave] = t
        if decision.action is Action.HALT and halted_at is None:
            halted_at = t
    result.state = state
    if state.status is Status.HALTED:
        # devices hear of the halt: running downloads stop, trial boots revert
        queue.clear()
        for device in devices:
            if device.stage is Stage.INSTALLED and state.revert_trial:
                move(device, Stage.REVERTED)
            elif device.stage in (Stage.OFFERED, Stage.DOWNLOADING):
                move(device, Stage.ABANDONED)
    result.exposed = sum(d.booted for d in devices)
    result.counters = counters
    return result


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method for small means, a rounded normal above (enough for a test fleet)."""
    if mean > 30:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
