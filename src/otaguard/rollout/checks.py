"""The tests a tick runs on the counters, each returning the figures it decided on.

Devices still in flight (offered, downloading, in trial boot, not past the deadline) have no
outcome yet. The two decisions treat them in opposite ways, so that each is valid however
reports are timed (failures usually arrive long before confirmations):

* **halt** counts them as not failed: k = failed + silent, n = every device offered. The true
  eventual count of failures among those n devices can only be higher, and both tests are
  monotone in k, so a halt on these figures would also be a halt on the true ones. A wave is
  tested once it has ``halt.min_sample`` outcomes.
* **advance** counts them as failed: k = failed + silent + in flight, over waves 0..current
  pooled. The advance is allowed only when even this pessimistic rate is below the threshold.

Wilson: halt when the one-sided lower bound is above the threshold; advance when the upper
bound is below it. SPRT (p0 = acceptable rate, p1 = threshold, alpha = 1 - confidence): halt
when the ratio reaches Wald's upper boundary; advance when it is at or below the lower one.
Health: every check compares updated devices (waves 0..current pooled) with the control tally
and halts when its one-sided p-value is below 1 - health.confidence.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass

from otaguard.rollout import stats
from otaguard.rollout.counters import HealthTally, WaveCounters
from otaguard.rollout.policy import Health, Method, Policy


@dataclass(frozen=True)
class FailureFigures:
    """One failure-rate test, as the audit log records it."""

    view: str  # "halt" (in flight = not failed) or "advance" (in flight = failed)
    waves: str  # "0" or "0-2"
    n: int
    k: int
    outcomes: int
    in_flight: int
    threshold: float
    confidence: float
    wilson: float | None  # lower bound for the halt view, upper for the advance view
    llr: float | None
    sprt_upper: float | None
    sprt_lower: float | None
    passed_min_sample: bool
    signal: bool  # halt view: the rate is above the threshold; advance view: it is below

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class HealthFigures:
    """One health check of updated devices against control."""

    check: str
    kind: str  # "rate", "proportion", "metric"
    devices: int
    control_devices: int
    value: float  # rate per device-hour, share flagged, or mean
    control_value: float
    limit: str  # what "worse" means, e.g. "rate > 1.5 x control"
    p_value: float
    confidence: float
    worse: bool  # p_value < 1 - confidence, with enough devices on both sides

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _sprt(policy: Policy) -> stats.Sprt:
    halt = policy.halt
    return stats.Sprt(
        p0=halt.acceptable_failure_rate,
        p1=halt.failure_threshold,
        alpha=1.0 - halt.confidence,
        beta=halt.sprt_beta,
    )


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def halt_test(policy: Policy, wave: int, counters: WaveCounters) -> FailureFigures:
    """Is this wave's failure rate above the threshold, with the policy's confidence?"""
    halt = policy.halt
    k, n = counters.failures, counters.total - counters.abandoned - counters.reverted
    enough = counters.outcomes >= halt.min_sample
    wilson = llr = None
    signal = False
    test = _sprt(policy)
    if Method.WILSON in halt.methods:
        wilson = stats.wilson_lower(k, n, halt.confidence)
        signal |= enough and wilson > halt.failure_threshold
    if Method.SPRT in halt.methods:
        llr = test.llr(k, n)
        signal |= enough and llr >= test.upper
    sprt_on = Method.SPRT in halt.methods
    return FailureFigures(
        view="halt",
        waves=str(wave),
        n=n,
        k=k,
        outcomes=counters.outcomes,
        in_flight=counters.in_flight,
        threshold=halt.failure_threshold,
        confidence=halt.confidence,
        wilson=wilson,
        llr=llr,
        sprt_upper=test.upper if sprt_on else None,
        sprt_lower=test.lower if sprt_on else None,
        passed_min_sample=enough,
        signal=signal,
    )


def advance_test(policy: Policy, upto: int, pooled: WaveCounters) -> FailureFigures:
    """Is the failure rate of waves 0..upto below the threshold even if every device still in
    flight fails?"""
    halt = policy.halt
    n = pooled.total - pooled.abandoned - pooled.reverted
    k = pooled.failures + pooled.in_flight
    enough = pooled.outcomes >= halt.min_sample
    test = _sprt(policy)
    signal = enough
    wilson = llr = None
    if Method.WILSON in halt.methods:
        wilson = stats.wilson_upper(k, n, halt.confidence)
        signal = signal and wilson < halt.failure_threshold
    if Method.SPRT in halt.methods:
        llr = test.llr(k, n)
        signal = signal and llr <= test.lower
    sprt_on = Method.SPRT in halt.methods
    return FailureFigures(
        view="advance",
        waves=_span(0, upto),
        n=n,
        k=k,
        outcomes=pooled.outcomes,
        in_flight=pooled.in_flight,
        threshold=halt.failure_threshold,
        confidence=halt.confidence,
        wilson=wilson,
        llr=llr,
        sprt_upper=test.upper if sprt_on else None,
        sprt_lower=test.lower if sprt_on else None,
        passed_min_sample=enough,
        signal=signal,
    )


#: beyond this many devices a policy's advance bound is treated as out of reach
_EVIDENCE_CAP = 10**9


def _advance_signal_at(policy: Policy, n: int) -> bool:
    """Would ``n`` confirmed devices and no failure give the advance test its signal?"""
    halt = policy.halt
    if n < halt.min_sample:
        return False
    if Method.WILSON in halt.methods and not (
        stats.wilson_upper(0, n, halt.confidence) < halt.failure_threshold
    ):
        return False
    if Method.SPRT in halt.methods:
        test = _sprt(policy)
        return test.llr(0, n) <= test.lower
    return True


def evidence_needed(policy: Policy) -> int | None:
    """The fewest confirmed devices (and no failure at all) with which the advance test can
    show the failure rate below the threshold; None: not within a billion. Both bounds only
    tighten as n grows with k = 0, so a binary search finds it."""
    if not _advance_signal_at(policy, _EVIDENCE_CAP):
        return None
    sizes = range(_EVIDENCE_CAP + 1)
    return bisect.bisect_left(sizes, True, key=lambda n: _advance_signal_at(policy, n))


def plan_warnings(policy: Policy, cumulative: tuple[int, ...]) -> list[str]:
    """Why the campaign could never leave its first wave, even if every device in it
    confirmed ([] = it can): an operator learns it at creation, not after waiting there for
    good. The advance test pools waves 0..k and the waves only grow, so the first decides."""
    needed = evidence_needed(policy)
    first = cumulative[0]
    if needed is not None and first >= needed:
        return []
    shown = "no number of devices" if needed is None else f"at least {needed:,} devices"
    outcome = (
        "never be marked completed (every device is still offered the release)"
        if len(cumulative) == 1
        else "stop at wave 0 for good"
    )
    return [
        f"wave 0 holds {first:,} devices; showing a failure rate below "
        f"{policy.halt.failure_threshold:.3g} takes {shown} confirmed with no failure, so the "
        f"campaign would {outcome}: widen the first wave or loosen the halt bounds"
    ]


def health_enough(health: Health, treated: HealthTally, control: HealthTally) -> bool:
    return min(treated.devices, control.devices) >= health.min_devices


def health_tests(
    health: Health, treated: HealthTally, control: HealthTally
) -> tuple[HealthFigures, ...]:
    """Every configured check of updated devices against control."""
    enough = health_enough(health, treated, control)
    alpha = 1.0 - health.confidence
    out: list[HealthFigures] = []

    def figures(check: str, kind: str, value: float, ctrl: float, limit: str, p: float) -> None:
        out.append(
            HealthFigures(
                check=check,
                kind=kind,
                devices=treated.devices,
                control_devices=control.devices,
                value=value,
                control_value=ctrl,
                limit=limit,
                p_value=p,
                confidence=health.confidence,
                worse=enough and p < alpha,
            )
        )

    for rate in health.rates:
        x1, x2 = treated.counts.get(rate.name, 0), control.counts.get(rate.name, 0)
        t1, t2 = treated.exposure_s, control.exposure_s
        p = stats.poisson_rate_test(x1, t1, x2, t2, rate.max_ratio)
        figures(
            rate.name,
            "rate",
            3600.0 * x1 / t1 if t1 else 0.0,
            3600.0 * x2 / t2 if t2 else 0.0,
            f"rate > {rate.max_ratio:g} x control",
            p,
        )
    for prop in health.proportions:
        hit1, seen1 = treated.flags.get(prop.name, (0, 0))
        hit2, seen2 = control.flags.get(prop.name, (0, 0))
        p = stats.two_proportion_test(hit1, seen1, hit2, seen2, prop.max_difference)
        figures(
            prop.name,
            "proportion",
            hit1 / seen1 if seen1 else 0.0,
            hit2 / seen2 if seen2 else 0.0,
            f"share > control + {prop.max_difference:g}",
            p,
        )
    for metric in health.metrics:
        n1, m1, v1 = treated.mean_var(metric.name)
        n2, m2, v2 = control.mean_var(metric.name)
        sign = 1.0 if metric.higher_is_worse else -1.0
        p = stats.welch_test(n1, sign * m1, v1, n2, sign * m2, v2, metric.max_difference)
        word = "higher" if metric.higher_is_worse else "lower"
        figures(
            metric.name,
            "metric",
            m1,
            m2,
            f"mean {word} than control by > {metric.max_difference:g}",
            p,
        )
    return tuple(out)
