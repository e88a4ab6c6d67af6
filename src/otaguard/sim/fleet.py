"""The simulated fleet: what each device of a wave does once the wave opens, drawn in bulk.

A device's life after its wave opens at time W (all vectors over the wave's devices):

1. **Offer** at its first check-in after W. Check-ins repeat every ``poll_s`` with jitter
   (intervals uniform in poll_s * (1 +- poll_jitter)), so the wait is the renewal process's
   residual life: a length-biased interval X* (density proportional to x on [a, b], drawn as
   sqrt(a^2 + U (b^2 - a^2))) times a uniform.
2. A share ``silent_rate`` goes silent right after the offer and never reports again.
3. **Download** at a bandwidth drawn once per device (log-normal; a floor keeps it finite).
   Each attempt is cut with probability ``transient_rate`` (a network drop or, for
   ``power_share`` of them, a power cut) at a uniform point; the device waits the policy's
   back-off (``Policy.retry``) and starts again, until it succeeds or runs out of attempts
   (then it fails with that transient class).
4. **Install** (``install_s``): a share of the release's failures fail here; the others boot
   in trial (``boot_s``), the moment the device runs the release (it is *exposed*). A share
   ``boot_share`` of the failures fail the trial boot (reported at a uniform point of the trial);
   the rest confirm after ``trial_s``.
5. **Health**: ``window_s`` after confirming, one report of resets and crashes, Poisson with the
   control rate times ``health_ratio``.

Each outcome is reported when it happens; an offered device with no outcome by the policy's
deadline is marked silent then (a later outcome moves it from silent, as the server's sweep
would). Times are in seconds from the campaign's start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from otaguard.rollout import FailureClass, Policy, Retried, Stage, Transition

Floats = npt.NDArray[np.float64]

INF = np.inf


@dataclass(frozen=True)
class FleetModel:
    """How the simulated devices behave; every figure is an assumption docs/rollout.md lists."""

    devices: int
    failure_rate: float = 0.005  # chance that a device's install or trial boot fails
    boot_share: float = 0.6  # of those failures, the share that fail the trial boot
    silent_rate: float = 0.001  # offered devices that are never heard of again
    poll_s: float = 900.0
    poll_jitter: float = 0.2
    image_mbit: float = 1200.0  # a 150 MB image
    bandwidth_median_mbps: float = 4.0
    bandwidth_sigma: float = 1.0  # log-normal shape
    bandwidth_floor_mbps: float = 0.25
    transient_rate: float = 0.05  # chance an attempt is cut
    power_share: float = 0.3  # of cut attempts, power cuts (the rest: network)
    install_s: float = 300.0
    boot_s: float = 90.0
    trial_s: float = 600.0
    reset_rate_per_day: float = 0.2  # control devices' resets per device-day
    crash_rate_per_day: float = 0.5
    health_ratio: float = 1.0  # updated devices' reset and crash rates over control's
    install_gate: bool = False  # the agent checks in once more between download and install
    tick_s: float = 60.0
    horizon_s: float = 30 * 86400.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("the fleet needs at least one device")
        for name in ("failure_rate", "boot_share", "silent_rate", "transient_rate", "power_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if min(self.poll_s, self.tick_s, self.horizon_s, self.bandwidth_floor_mbps) <= 0:
            raise ValueError("times and bandwidths must be positive")
        if not 0.0 <= self.poll_jitter < 1.0 or self.health_ratio < 0.0:
            raise ValueError("poll_jitter must be in [0, 1) and health_ratio >= 0")


def residual_wait(rng: np.random.Generator, model: FleetModel, size: int) -> Floats:
    """Time from an arbitrary moment to a device's next check-in (jittered polling)."""
    low = model.poll_s * (1.0 - model.poll_jitter)
    high = model.poll_s * (1.0 + model.poll_jitter)
    interval = np.sqrt(low * low + rng.random(size) * (high * high - low * low))
    return interval * rng.random(size)


#: Transition kinds, in an order where every stage is entered before it is left, so that
#: cumulative counts applied in this order never take a stage below zero.
OUTCOME_CODES = (
    (Stage.CONFIRMED, None),
    (Stage.FAILED, FailureClass.INSTALL),
    (Stage.FAILED, FailureClass.BOOT),
    (Stage.FAILED, FailureClass.NETWORK),
    (Stage.FAILED, FailureClass.POWER),
)
_CONFIRMED, _F_INSTALL, _F_BOOT, _F_NETWORK, _F_POWER = range(len(OUTCOME_CODES))
_NONE = -1  # silent: no outcome ever


@dataclass
class WaveTimeline:
    """One wave's devices: event times (inf = never) and the transitions they make."""

    opened_at: float
    offer: Floats
    downloaded: Floats
    installed: Floats  # trial boot of the release: the device is exposed from here
    outcome: Floats
    outcome_code: npt.NDArray[np.int8]
    confirm: Floats
    # the counters' events: (report, sorted times); retries as (report, sorted times)
    events: list[tuple[Transition | Retried, Floats]]
    health_times: Floats  # sorted
    health_resets: npt.NDArray[np.int64]  # cumulative along health_times
    health_crashes: npt.NDArray[np.int64]

    @property
    def size(self) -> int:
        return int(self.offer.size)

    def settled_at(self) -> float:
        """The time of the wave's last counted event: its counters never change after it."""
        last = [float(times[-1]) for _, times in self.events if times.size]
        last += [float(self.health_times[-1])] if self.health_times.size else []
        finite = [x for x in last if np.isfinite(x)]
        # an infinite time is an event that never happens (a silent device's download)
        return max(finite, default=self.opened_at)


def _downloads(
    rng: np.random.Generator, model: FleetModel, policy: Policy, start: Floats
) -> tuple[Floats, Floats, npt.NDArray[np.int8], list[tuple[Retried, Floats]]]:
    """Attempts with back-off: (download done, give-up time, give-up code, retry events)."""
    size = start.size
    bandwidth = np.maximum(
        model.bandwidth_floor_mbps,
        model.bandwidth_median_mbps * np.exp(model.bandwidth_sigma * rng.standard_normal(size)),
    )
    duration = model.image_mbit / bandwidth
    done = np.full(size, INF)
    gave_up = np.full(size, INF)
    code = np.full(size, _NONE, dtype=np.int8)
    retries: dict[FailureClass, list[Floats]] = {FailureClass.NETWORK: [], FailureClass.POWER: []}
    active = np.arange(size)
    begin = start.copy()
    for attempt in range(1, policy.retry.max_attempts + 1):
        cut = rng.random(active.size) < model.transient_rate
        power = rng.random(active.size) < model.power_share
        where = rng.random(active.size)
        ok = active[~cut]
        done[ok] = begin[~cut] + duration[ok]
        failed = active[cut]
        at = begin[cut] + where[cut] * duration[failed]
        klass = power[cut]
        wait = policy.retry.backoff(attempt)
        if wait is None:
            gave_up[failed] = at
            code[failed] = np.where(klass, _F_POWER, _F_NETWORK)
            break
        retries[FailureClass.POWER].append(at[klass])
        retries[FailureClass.NETWORK].append(at[~klass])
        active, begin = failed, at + wait
    events = [
        (Retried(klass), np.sort(np.concatenate(parts)) if parts else np.empty(0))
        for klass, parts in retries.items()
    ]
    return done, gave_up, code, events


def open_wave(
    rng: np.random.Generator, model: FleetModel, policy: Policy, size: int, opened_at: float
) -> WaveTimeline:
    """Draw the whole life of ``size`` devices whose wave opens at ``opened_at``."""
    offer = opened_at + residual_wait(rng, model, size)
    silent = rng.random(size) < model.silent_rate
    # a silent device's attempts start "never": none of its events is ever counted
    start = np.where(silent, INF, offer)
    downloaded, gave_up, code, retry_events = _downloads(rng, model, policy, start)
    code[silent] = _NONE

    fails = rng.random(size) < model.failure_rate
    at_boot = rng.random(size) < model.boot_share
    trial_point = rng.random(size)
    got = np.isfinite(downloaded)
    written = downloaded + model.install_s
    installed = np.where(got & ~(fails & ~at_boot), written + model.boot_s, INF)
    confirm = np.where(got & ~fails, installed + model.trial_s, INF)
    outcome = np.where(code >= 0, gave_up, INF)
    outcome = np.where(got & fails & ~at_boot, written, outcome)
    outcome = np.where(got & fails & at_boot, installed + trial_point * model.trial_s, outcome)
    outcome = np.where(got & ~fails, confirm, outcome)
    code = np.where(got & fails & ~at_boot, _F_INSTALL, code)
    code = np.where(got & fails & at_boot, _F_BOOT, code)
    code = np.where(got & ~fails, _CONFIRMED, code).astype(np.int8)

    events = _transitions(policy, offer, installed, outcome, code)
    events += retry_events

    # health: one report window_s after confirming (late or not), Poisson counts
    window = policy.health.window_s
    has = np.isfinite(confirm)
    times = confirm[has] + window
    order = np.argsort(times, kind="stable")
    scale = model.health_ratio * window / 86400.0
    resets = rng.poisson(model.reset_rate_per_day * scale, times.size)[order]
    crashes = rng.poisson(model.crash_rate_per_day * scale, times.size)[order]
    return WaveTimeline(
        opened_at=opened_at,
        offer=offer,
        downloaded=downloaded,
        installed=installed,
        outcome=outcome,
        outcome_code=code,
        confirm=confirm,
        events=events,
        health_times=times[order],
        health_resets=np.cumsum(resets),
        health_crashes=np.cumsum(crashes),
    )


def _transitions(
    policy: Policy,
    offer: Floats,
    installed: Floats,
    outcome: Floats,
    code: npt.NDArray[np.int8],
) -> list[tuple[Transition | Retried, Floats]]:
    """The moves between stages the server would see, grouped by kind, each sorted in time.

    No outcome by offer + deadline: silent at the deadline (from downloading, or from trial
    boot when installed before it), and a later outcome then moves the device from silent.
    """
    deadline = offer + policy.halt.deadline_s
    late = outcome > deadline
    installed_in_time = installed <= np.minimum(outcome, deadline)
    out: list[tuple[Transition | Retried, Floats]] = [
        (Transition(None, Stage.DOWNLOADING), np.sort(offer)),
        (Transition(Stage.DOWNLOADING, Stage.INSTALLED), np.sort(installed[installed_in_time])),
        (Transition(Stage.DOWNLOADING, Stage.SILENT), np.sort(deadline[late & ~installed_in_time])),
        (Transition(Stage.INSTALLED, Stage.SILENT), np.sort(deadline[late & installed_in_time])),
    ]
    for index, (after, failure) in enumerate(OUTCOME_CODES):
        mine = code == index
        on_time = mine & ~late
        before = Stage.INSTALLED if index in (_CONFIRMED, _F_BOOT) else Stage.DOWNLOADING
        out.append((Transition(before, after, failure), np.sort(outcome[on_time])))
        out.append((Transition(Stage.SILENT, after, failure), np.sort(outcome[mine & late])))
    return out
