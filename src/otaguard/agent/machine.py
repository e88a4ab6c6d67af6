"""The agent's state machine: ``step(state, input) -> state``, pure (no I/O, no clock).

::

            +--(304, or nothing to do)--+
            v                           |
          IDLE --check in, verify--> DOWNLOAD --verified--> INSTALL --committed--> REBOOT
            ^                           |                      |                     |
            |                        refused               refused /             booted the
            |                           |                  unusable              new image
            |                           v                      v                     v
            +-------(reported)------ REPORT <---(confirmed / reverted)------------ TRIAL

Every arrow is an input (a dataclass below) that the I/O shell
(:mod:`otaguard.agent.runner`) produces by carrying out the phase's action; the
new state is persisted atomically before the next action starts, so a kill or
a power cut between two actions resumes at the second, and a cut inside an
action repeats it (every action is idempotent: downloads resume from their
journal, installs from what is already right in flash, boot and confirm are
the device's own). Transient failures keep the phase and count an attempt of
their class (the shell waits with backoff, or gives up for this cycle); a
verification refusal leaves the plan at once, is reported, and the answer that
carried it is remembered (its ETag) so it is not tried again until the server
offers something else.

Events for the server (``Record``) are queued in the state's outbox by the
same transition that makes them true, so they are neither lost nor invented
by a crash; their ids derive from the state's salt and sequence number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from otaguard.agent.config import Failure
from otaguard.agent.state import (
    MAX_TEXT,
    Health,
    InFlight,
    Installed,
    Phase,
    Plan,
    PlannedTarget,
    Record,
    Result,
    State,
)

# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    at: str  # RFC 3339 time of the input (the shell's clock), stamped on its events


@dataclass(frozen=True)
class Enrolled(Input):
    poll_interval: int | None


@dataclass(frozen=True)
class StateReported(Input):
    local: str
    server: str


@dataclass(frozen=True)
class EventsSent(Input):
    ids: frozenset[str]


@dataclass(frozen=True)
class UpToDate(Input):
    etag: str | None
    poll_interval: int | None


@dataclass(frozen=True)
class Planned(Input):
    plan: Plan
    poll_interval: int | None


@dataclass(frozen=True)
class Downloaded(Input):
    targets: tuple[PlannedTarget, ...]  # the plan's, with kind and image id filled in


@dataclass(frozen=True)
class Installed_(Input):
    slot: str


@dataclass(frozen=True)
class Booted(Input):
    """The plan's images run, on trial (a reset after the install)."""


@dataclass(frozen=True)
class Confirmed(Input):
    installed: Mapping[str, Installed]


@dataclass(frozen=True)
class Reverted(Input):
    check: str
    detail: str


@dataclass(frozen=True)
class Refused(Input):
    check: str
    detail: str
    etag: str | None = None  # the answer that carried the refused offer (IDLE: no plan yet)
    campaign: str | None = None  # the campaign that answer named (IDLE: no plan yet)


@dataclass(frozen=True)
class Incompatible(Input):
    """A verified offer this device cannot take (deterministic: not retried for that answer)."""

    check: str
    detail: str
    etag: str
    campaign: str | None
    targets: tuple[PlannedTarget, ...]


@dataclass(frozen=True)
class Abandoned(Input):
    """The server said ``abandon`` for the campaign in flight: its partial data is deleted."""

    campaign: str


@dataclass(frozen=True)
class Recheck(Input):
    """A push asked for a check-in during a download: check in first (the chunks are kept)."""


@dataclass(frozen=True)
class BootSeen(Input):
    """The device was reset; ``crashes`` slots were rejected by the bootloader on the way."""

    crashes: int


@dataclass(frozen=True)
class HealthSent(Input):
    """A health report went out (or the first window starts): a new window begins at ``at``."""


@dataclass(frozen=True)
class Unusable(Input):
    """The plan cannot be carried out on this device (configuration, storage): not retried."""

    detail: str


@dataclass(frozen=True)
class Failed(Input):
    failure: Failure
    detail: str


@dataclass(frozen=True)
class Forgotten(Failed):
    """A transient 401: the server may have forgotten the device, which enrols again."""


@dataclass(frozen=True)
class GaveUp(Input):
    failure: Failure
    detail: str


@dataclass(frozen=True)
class Reported(Input):
    pass


@dataclass(frozen=True)
class Restarted(Input):
    """A new process starts: a download goes back through a fresh check-in (see the runner)."""


class InvalidTransition(RuntimeError):
    """The shell fed an input the current phase cannot take (a bug, never the network's)."""


# -- the transition function ----------------------------------------------------------------

#: (event kind, target, (failure, check) or None for a success)
_Item = tuple[str, PlannedTarget | None, tuple[str, str | None] | None]

_PLAN_FAILED = {Phase.DOWNLOAD: "download-failed", Phase.INSTALL: "install-failed"}


def step(state: State, inp: Input, *, max_outbox: int = 1000) -> State:
    """The state after ``inp``; raises :class:`InvalidTransition` for an impossible pair."""
    new = _step(state, inp)
    if len(new.outbox) > max_outbox:
        new = replace(new, outbox=new.outbox[-max_outbox:])
    return new


def _step(state: State, inp: Input) -> State:
    phase = state.phase
    if isinstance(inp, Forgotten):
        state = replace(state, enrolled=False, reported_local=None, reported_server=None)
    if isinstance(inp, Failed):
        attempts = dict(state.attempts)
        attempts[inp.failure.value] = attempts.get(inp.failure.value, 0) + 1
        return replace(state, attempts=attempts)
    if isinstance(inp, StateReported):
        return replace(state, reported_local=inp.local, reported_server=inp.server)
    if isinstance(inp, EventsSent):
        return replace(state, outbox=tuple(r for r in state.outbox if r.id not in inp.ids))
    if isinstance(inp, Restarted | Recheck):
        if phase is Phase.DOWNLOAD:  # in flight still: a later "abandon" finds it
            return replace(state, phase=Phase.IDLE, plan=None, etag=None, attempts={})
        if isinstance(inp, Recheck):
            raise InvalidTransition(f"phase {phase.value} cannot take Recheck")
        return state
    if isinstance(inp, BootSeen):
        health = state.health or Health(since=inp.at)
        health = replace(health, resets=health.resets + 1, crashes=health.crashes + inp.crashes)
        return replace(state, health=health)
    if isinstance(inp, HealthSent):
        return replace(state, health=Health(since=inp.at))
    if isinstance(inp, Enrolled) and phase is Phase.IDLE:
        return replace(state, enrolled=True, poll_interval=inp.poll_interval or state.poll_interval)
    if isinstance(inp, UpToDate) and phase is Phase.IDLE:
        return replace(
            state,
            etag=inp.etag,
            poll_interval=inp.poll_interval or state.poll_interval,
            attempts={},
            result=Result.UP_TO_DATE,
        )
    if isinstance(inp, Planned) and phase is Phase.IDLE:
        plan = inp.plan
        state = replace(
            state,
            phase=Phase.DOWNLOAD,
            plan=plan,
            director_version=max(state.director_version, plan.director_version),
            poll_interval=inp.poll_interval or state.poll_interval,
            etag=None,
            attempts={},
            result=None,
            inflight=InFlight(
                plan.campaign, "download", tuple((t.component, t.path) for t in plan.targets)
            ),
        )
        return _events(state, inp, [("download-started", t, None) for t in plan.targets])
    if isinstance(inp, Downloaded) and phase is Phase.DOWNLOAD:
        plan = _plan(state)
        if [t.path for t in inp.targets] != [t.path for t in plan.targets]:
            raise InvalidTransition("Downloaded names other targets than the plan")
        state = replace(
            state, phase=Phase.INSTALL, plan=replace(plan, targets=inp.targets), attempts={}
        )
        return _events(state, inp, [("downloaded", t, None) for t in inp.targets])
    if isinstance(inp, Installed_) and phase is Phase.INSTALL:
        inflight = state.inflight and replace(state.inflight, stage="install")
        state = replace(state, phase=Phase.REBOOT, attempts={}, inflight=inflight)
        detail = f"slot {inp.slot}"
        return _events(state, inp, [("installed", t, None) for t in _plan(state).targets], detail)
    if isinstance(inp, Booted) and phase is Phase.REBOOT:
        state = replace(state, phase=Phase.TRIAL, attempts={})
        return _events(state, inp, [("boot-trial", t, None) for t in _plan(state).targets])
    if isinstance(inp, Confirmed) and phase in (Phase.REBOOT, Phase.TRIAL):
        plan = _plan(state)
        installed = {**state.installed, **inp.installed}
        state = replace(
            state,
            phase=Phase.REPORT,
            installed=installed,
            etag=None,
            attempts={},
            result=Result.UPDATED,
            inflight=None,
            # the health window after an update: reported for the campaign (server.md)
            health=Health(since=inp.at, campaign=plan.campaign),
        )
        return _events(state, inp, [("confirmed", t, None) for t in plan.targets])
    if isinstance(inp, Reverted) and phase in (Phase.INSTALL, Phase.REBOOT, Phase.TRIAL):
        plan = _plan(state)
        state = replace(
            state,
            phase=Phase.REPORT,
            etag=plan.etag,
            attempts={},
            result=Result.REVERTED,
            inflight=None,
        )
        reverted: tuple[str, str | None] = ("deterministic", inp.check)
        return _events(state, inp, [("reverted", t, reverted) for t in plan.targets], inp.detail)
    if isinstance(inp, Refused) and phase in (Phase.IDLE, Phase.DOWNLOAD, Phase.INSTALL):
        targets = state.plan.targets if state.plan is not None else ()
        etag = inp.etag or (state.plan.etag if state.plan is not None else None)
        campaign = state.plan.campaign if state.plan is not None else inp.campaign
        state = replace(
            state,
            phase=Phase.REPORT,
            plan=None,
            etag=etag,
            attempts={},
            result=Result.REFUSED,
            inflight=None,
        )
        failure: tuple[str, str | None] = ("deterministic", inp.check)
        items: list[_Item] = [("refused", t, failure) for t in targets]
        items = items or [("refused", None, failure)]
        return _events(state, inp, items, inp.detail, campaign)
    if isinstance(inp, Incompatible) and phase is Phase.IDLE:
        state = replace(
            state,
            phase=Phase.REPORT,
            plan=None,
            etag=inp.etag,  # not tried again until the server's answer changes
            attempts={},
            result=Result.INCOMPATIBLE,
            inflight=None,
        )
        failure = ("deterministic", inp.check)
        items = [("incompatible", t, failure) for t in inp.targets]
        return _events(state, inp, items, inp.detail, inp.campaign)
    if isinstance(inp, Abandoned) and phase is Phase.IDLE:
        flight = state.inflight
        if flight is None or flight.campaign != inp.campaign or flight.stage != "download":
            raise InvalidTransition("Abandoned without a download in flight for that campaign")
        # etag None: the same answer's other news (another offer) is fetched again at once
        state = replace(
            state,
            phase=Phase.REPORT,
            plan=None,
            etag=None,
            attempts={},
            result=Result.ABANDONED,
            inflight=None,
        )
        dropped = [
            ("abandoned", PlannedTarget(component, path, 1, {}), None)
            for component, path in flight.targets
        ]
        return _events(state, inp, dropped, "the campaign was halted", inp.campaign)
    if isinstance(inp, Unusable) and phase in _PLAN_FAILED:
        plan = _plan(state)
        kind = _PLAN_FAILED[phase]
        state = replace(
            state,
            phase=Phase.REPORT,
            plan=None,
            etag=plan.etag,
            attempts={},
            result=Result.FAILED,
            inflight=None,
        )
        broken: tuple[str, str | None] = ("deterministic", None)
        items = [(kind, t, broken) for t in plan.targets]
        return _events(state, inp, items, inp.detail, plan.campaign)
    if isinstance(inp, GaveUp):
        return _gave_up(state, inp)
    if isinstance(inp, Reported) and phase is Phase.REPORT:
        return replace(state, phase=Phase.IDLE, plan=None, attempts={})
    raise InvalidTransition(f"phase {phase.value} cannot take {type(inp).__name__}")


def _gave_up(state: State, inp: GaveUp) -> State:
    """Transient failures outlasted their retries: end this cycle, keep what was achieved."""
    phase = state.phase
    if phase in (Phase.IDLE, Phase.REPORT):
        result = state.result if phase is Phase.REPORT else Result.FAILED
        return replace(state, phase=Phase.IDLE, plan=None, attempts={}, result=result)
    if phase in _PLAN_FAILED:  # downloads keep their chunks; the next cycle checks in afresh
        plan = _plan(state)
        kind = _PLAN_FAILED[phase]
        state = replace(
            state, phase=Phase.IDLE, plan=None, etag=None, attempts={}, result=Result.FAILED
        )
        failure: tuple[str, str | None] = ("transient", None)
        detail = f"{inp.failure.value}: {inp.detail}"
        items = [(kind, t, failure) for t in plan.targets]
        return _events(state, inp, items, detail, plan.campaign)
    # REBOOT / TRIAL: the device holds the outcome; keep the phase, the shell tries again later
    return replace(state, attempts={}, result=Result.FAILED)


def _plan(state: State) -> Plan:
    if state.plan is None:
        raise InvalidTransition(f"phase {state.phase.value} without a plan")
    return state.plan


def _events(
    state: State,
    inp: Input,
    items: Sequence[_Item],
    detail: str = "",
    campaign: str | None = None,
) -> State:
    """Queue one record per item; ``campaign`` defaults to the plan's (the answer named it)."""
    if campaign is None and state.plan is not None:
        campaign = state.plan.campaign
    records = []
    for offset, (kind, target, failure) in enumerate(items):
        records.append(
            Record(
                id=state.event_id(offset),
                time=inp.at,
                kind=kind,
                ecu=target.component if target is not None else None,
                target=target.path if target is not None else None,
                result="ok" if failure is None else "failed",
                failure=None if failure is None else failure[0],
                check=None if failure is None else failure[1],
                detail=detail[:MAX_TEXT],
                campaign=campaign,
            )
        )
    return replace(state, seq=state.seq + len(items), outbox=state.outbox + tuple(records))
