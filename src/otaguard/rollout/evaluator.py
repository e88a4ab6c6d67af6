"""The campaign state machine: ``step(state, event, now) -> (state, decision)``, pure.

No clock, no database, no network: the server stores the returned state and appends the
decision (with its figures) to the audit log; the simulator does the same in memory. That
is what lets the tests replay any sequence of events and counters without mocks.

States and the events each accepts (anything else raises :class:`CampaignStateError`)::

    draft --approve--> approved --start--> running(wave i) --pause--> paused --resume--> running
      |                   |                  |    \\--tick: advance--> running(wave i+1)
      |                   |                  |     \\-tick: after the last wave--> completed
      +--cancel-----------+--cancel----------+--cancel--> cancelled
                                             running/paused --halt (kill switch), or
                                             tick: failure rate or health--> halted

Rules kept here:

1. Two-person rule: the campaign's creator cannot approve it (:class:`TwoPersonRuleError`);
   creation, approval, start, pause, resume, cancel and halt record who and when.
2. A manual halt takes effect in the state it returns: from then on ``offering`` is None, so no
   device is offered the release, downloads are abandoned at the next check-in and, with
   ``halt.revert_on_halt``, devices in trial boot are told to revert (``revert_trial``).
3. On a tick while running or paused: halt when any opened wave's failure rate is above the
   threshold with the stated confidence, or health is worse than control (see
   :mod:`otaguard.rollout.checks`). While running and not halted: advance (or complete, after
   the last wave) when the wave has soaked ``waves.min_soak_s`` of running time (pauses do not
   count), has ``advance.min_confirmed`` confirmed devices (at most its planned size; once
   soaked with nothing in flight, at most those that confirmed, but at least one), the
   pooled failure rate is below the threshold with in-flight devices counted as failures, and,
   with ``advance.require_health``, health has enough devices on both sides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from otaguard.errors import CampaignStateError, TwoPersonRuleError
from otaguard.rollout import checks
from otaguard.rollout.checks import FailureFigures, HealthFigures
from otaguard.rollout.cohort import WavePlan, plan_waves
from otaguard.rollout.counters import CampaignCounters, FailureClass, HealthTally, WaveCounters
from otaguard.rollout.policy import Policy


class Status(Enum):
    DRAFT = "draft"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    CANCELLED = "cancelled"
    COMPLETED = "completed"

    @property
    def final(self) -> bool:
        return self in (Status.HALTED, Status.CANCELLED, Status.COMPLETED)


@dataclass(frozen=True)
class Stamp:
    """Who did something, and when (seconds since the epoch, from the caller's clock)."""

    by: str
    at: float


@dataclass(frozen=True)
class CampaignState:
    campaign_id: str
    policy: Policy
    plan: WavePlan
    status: Status
    created: Stamp
    approved: Stamp | None = None
    started: Stamp | None = None
    paused: Stamp | None = None  # the latest pause, kept after a resume
    resumed: Stamp | None = None
    ended: Stamp | None = None  # halted, cancelled or completed ("evaluator" for automatic)
    end_reason: str | None = None
    wave: int = 0
    wave_opened_at: float | None = None
    soaked_s: float = 0.0  # running time of the current wave banked at the last pause
    running_since: float | None = None

    @property
    def offering(self) -> int | None:
        """Devices of waves 0..offering may be offered the release now; None: offer nothing.

        A completed campaign keeps every wave open: a vehicle that was parked or offline
        while it ran still gets the release at its next check-in (the release has proven
        itself on every wave; the server still checks the vehicle's versions are compatible,
        and stops these late offers once a newer campaign covers the same hardware)."""
        return self.wave if self.status in (Status.RUNNING, Status.COMPLETED) else None

    @property
    def revert_trial(self) -> bool:
        """Devices still in trial boot must be told to revert."""
        return self.status is Status.HALTED and self.policy.halt.revert_on_halt

    def soak(self, now: float) -> float:
        """Running time of the current wave (a clock going back never adds time)."""
        live = 0.0 if self.running_since is None else max(0.0, now - self.running_since)
        return self.soaked_s + live


@dataclass(frozen=True)
class Approve:
    by: str


@dataclass(frozen=True)
class Start:
    by: str


@dataclass(frozen=True)
class Pause:
    by: str


@dataclass(frozen=True)
class Resume:
    by: str


@dataclass(frozen=True)
class Cancel:
    by: str


@dataclass(frozen=True)
class Halt:
    """The manual kill switch."""

    by: str
    reason: str = "manual halt"


@dataclass(frozen=True)
class Tick:
    counters: CampaignCounters


Event = Approve | Start | Pause | Resume | Cancel | Halt | Tick


class Action(Enum):
    NONE = "none"
    APPROVE = "approve"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    ADVANCE = "advance"
    HALT = "halt"
    COMPLETE = "complete"


#: Who an automatic decision is recorded as.
EVALUATOR = "evaluator"


@dataclass(frozen=True)
class Decision:
    """What a step did and why, with the figures it decided on (for the audit log)."""

    action: Action
    wave: int
    at: float
    by: str
    reason: str
    failure: tuple[FailureFigures, ...] = ()
    health: tuple[HealthFigures, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action.value,
            "wave": self.wave,
            "at": self.at,
            "by": self.by,
            "reason": self.reason,
            "failure": [f.to_dict() for f in self.failure],
            "health": [h.to_dict() for h in self.health],
        }


def create(
    campaign_id: str,
    policy: Policy,
    population: int,
    *,
    by: str,
    now: float,
    buckets: Sequence[int] | None = None,
) -> CampaignState:
    """A draft campaign over ``population`` devices (what the selector matched), its waves
    planned once and for all (exactly sized when the devices' ``buckets`` are given: see
    :func:`otaguard.rollout.cohort.plan_waves`)."""
    _identity(by)
    _clock(now)
    if not campaign_id:
        raise CampaignStateError("a campaign needs an id")
    return CampaignState(
        campaign_id=campaign_id,
        policy=policy,
        plan=plan_waves(policy.waves, population, buckets),
        status=Status.DRAFT,
        created=Stamp(by, now),
    )


def _identity(by: str) -> None:
    if not isinstance(by, str) or not by.strip():
        raise CampaignStateError("an event needs the identity of who made it")


def _clock(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now}")


def _require(state: CampaignState, event: str, *allowed: Status) -> None:
    if state.status not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise CampaignStateError(
            f"campaign {state.campaign_id}: cannot {event} a campaign that is "
            f"{state.status.value} (only {names})"
        )


def step(state: CampaignState, event: Event, now: float) -> tuple[CampaignState, Decision]:
    """Apply one event at time ``now``; return the new state and what was decided."""
    _clock(now)
    if isinstance(event, Tick):
        return _tick(state, event.counters, now)
    _identity(event.by)
    replace = dataclasses.replace
    if isinstance(event, Approve):
        _require(state, "approve", Status.DRAFT)
        if event.by == state.created.by:
            raise TwoPersonRuleError(
                f"campaign {state.campaign_id}: {event.by} created it and cannot also approve "
                "it; another person must"
            )
        new = replace(state, status=Status.APPROVED, approved=Stamp(event.by, now))
        return new, _said(new, Action.APPROVE, event.by, now, "approved")
    if isinstance(event, Start):
        _require(state, "start", Status.APPROVED)
        new = replace(
            state,
            status=Status.RUNNING,
            started=Stamp(event.by, now),
            wave=0,
            wave_opened_at=now,
            soaked_s=0.0,
            running_since=now,
        )
        return new, _said(new, Action.START, event.by, now, "started: wave 0 open")
    if isinstance(event, Pause):
        _require(state, "pause", Status.RUNNING)
        new = replace(
            state,
            status=Status.PAUSED,
            paused=Stamp(event.by, now),
            soaked_s=state.soak(now),
            running_since=None,
        )
        return new, _said(new, Action.PAUSE, event.by, now, "paused: no new offers")
    if isinstance(event, Resume):
        _require(state, "resume", Status.PAUSED)
        new = replace(state, status=Status.RUNNING, resumed=Stamp(event.by, now), running_since=now)
        return new, _said(new, Action.RESUME, event.by, now, "resumed")
    if isinstance(event, Cancel):
        _require(state, "cancel", Status.DRAFT, Status.APPROVED, Status.RUNNING, Status.PAUSED)
        new = _end(state, Status.CANCELLED, event.by, now, "cancelled")
        return new, _said(new, Action.CANCEL, event.by, now, "cancelled")
    if isinstance(event, Halt):
        # also after completion: a completed campaign still reaches vehicles that missed it,
        # and a fault found late must be able to stop that too
        _require(state, "halt", Status.RUNNING, Status.PAUSED, Status.COMPLETED)
        late = " after completion" if state.status is Status.COMPLETED else ""
        reason = f"halted by {event.by}{late}: {event.reason}"
        new = _end(state, Status.HALTED, event.by, now, reason)
        return new, _said(new, Action.HALT, event.by, now, reason)
    raise TypeError(f"not a campaign event: {event!r}")


def _end(state: CampaignState, status: Status, by: str, now: float, reason: str) -> CampaignState:
    return dataclasses.replace(
        state,
        status=status,
        ended=Stamp(by, now),
        end_reason=reason,
        soaked_s=state.soak(now),
        running_since=None,
    )


def _said(state: CampaignState, action: Action, by: str, now: float, reason: str) -> Decision:
    return Decision(action, state.wave, now, by, reason)


def _opened(state: CampaignState, counters: CampaignCounters) -> tuple[WaveCounters, ...]:
    """The opened waves' counters; missing ones (no report yet) are empty."""
    for index, wave in enumerate(counters.waves[state.wave + 1 :], start=state.wave + 1):
        if wave.total or wave.health.devices:
            raise ValueError(f"counters report devices in wave {index}, which is not open")
    waves = counters.waves[: state.wave + 1]
    return waves + (WaveCounters(),) * (state.wave + 1 - len(waves))


def _tick(
    state: CampaignState, counters: CampaignCounters, now: float
) -> tuple[CampaignState, Decision]:
    if state.status not in (Status.RUNNING, Status.PAUSED):
        return state, _said(state, Action.NONE, EVALUATOR, now, f"{state.status.value}")
    policy = state.policy
    waves = _opened(state, counters)
    halts = [checks.halt_test(policy, i, c) for i, c in enumerate(waves)]
    treated = HealthTally()
    for wave in waves:
        treated = treated + wave.health
    health = checks.health_tests(policy.health, treated, counters.control)

    bad = [f for f in halts if f.signal]
    worse = [h for h in health if h.worse]
    if bad or worse:
        reason = _halt_reason(bad, worse)
        shown = tuple(bad) if bad else (halts[state.wave],)
        new = _end(state, Status.HALTED, EVALUATOR, now, reason)
        return new, Decision(Action.HALT, state.wave, now, EVALUATOR, reason, shown, health)

    pooled = WaveCounters()
    for wave in waves:
        pooled = pooled + wave
    advance = checks.advance_test(policy, state.wave, pooled)
    figures = (halts[state.wave], advance)
    if state.status is Status.PAUSED:
        return state, Decision(Action.NONE, state.wave, now, EVALUATOR, "paused", figures, health)
    missing = _missing(state, waves[state.wave], advance, treated, counters.control, now)
    if missing:
        reason = f"wave {state.wave}: " + "; ".join(missing)
        return state, Decision(Action.NONE, state.wave, now, EVALUATOR, reason, figures, health)
    if state.wave + 1 == state.plan.waves:
        reason = f"wave {state.wave} passed; every wave done"
        new = _end(state, Status.COMPLETED, EVALUATOR, now, reason)
        return new, Decision(Action.COMPLETE, state.wave, now, EVALUATOR, reason, figures, health)
    new = dataclasses.replace(
        state, wave=state.wave + 1, wave_opened_at=now, soaked_s=0.0, running_since=now
    )
    reason = f"wave {state.wave} passed; wave {new.wave} open"
    return new, Decision(Action.ADVANCE, new.wave, now, EVALUATOR, reason, figures, health)


def _missing(
    state: CampaignState,
    current: WaveCounters,
    advance: FailureFigures,
    treated: HealthTally,
    control: HealthTally,
    now: float,
) -> list[str]:
    """What still stands between the current wave and the next, in words."""
    policy = state.policy
    out = []
    soak = state.soak(now)
    if soak < policy.waves.min_soak_s:
        out.append(f"soaked {soak:.0f} of {policy.waves.min_soak_s:.0f} s")
    needed = min(policy.advance.min_confirmed, state.plan.planned_size(state.wave))
    if soak >= policy.waves.min_soak_s and current.in_flight == 0 and current.total:
        # Soaked and settled: every device of the wave that checked in has an outcome. The
        # planned size is an expectation (the keyed hash spreads a wave binomially) and some
        # devices never confirm (incompatible, failed), so a small wave could otherwise wait
        # forever for confirmations it cannot get. The failure-rate bound below still decides.
        needed = min(needed, max(1, current.confirmed))
    if current.confirmed < needed:
        out.append(f"{current.confirmed} of {needed} devices confirmed")
    if not advance.signal:
        out.append(
            f"failure rate not yet shown below {advance.threshold:.3g} "
            f"({advance.k} failed or in flight of {advance.n})"
        )
    health = policy.health
    if (
        policy.advance.require_health
        and health.configured
        and not checks.health_enough(health, treated, control)
    ):
        out.append(
            f"health from {treated.devices} updated and {control.devices} control devices "
            f"(need {health.min_devices} each)"
        )
    return out


def _halt_reason(bad: list[FailureFigures], worse: list[HealthFigures]) -> str:
    parts = []
    for f in bad:
        parts.append(
            f"wave {f.waves}: failure rate above {f.threshold:.3g} with {f.confidence:.3g} "
            f"confidence ({f.k} failed of {f.n} offered)"
        )
    for h in worse:
        parts.append(
            f"health {h.check}: {h.limit} (p = {h.p_value:.2g}, {h.value:.4g} vs "
            f"{h.control_value:.4g})"
        )
    return "; ".join(parts)


def retry_after(policy: Policy, failure: FailureClass, attempt: int) -> float | None:
    """Seconds before attempt ``attempt + 1`` after ``failure`` ended attempt ``attempt``
    (1-based); None: do not retry (a deterministic failure, or the attempts are used up).

    Deterministic failures (verification refused, incompatible, install, boot) would fail the
    same way again; retrying them only adds load and hides the failure from the counters.
    """
    if not failure.transient:
        return None
    return policy.retry.backoff(attempt)
