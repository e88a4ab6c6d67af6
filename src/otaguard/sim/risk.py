"""Exact error rates of the halt rule, by dynamic programming over the binomial path.

Devices' outcomes arrive one at a time; after each one the evaluator applies the policy's halt
test (with its minimum sample). For a release that fails with probability p, the chance that
the test ever halts within a wave of n outcomes is the mass of the binomial paths that cross
the halt boundary: computed exactly here by carrying P(k failures so far, not yet halted)
from one outcome to the next. With p at or below the threshold this is the false-halt rate
(a good release stopped); above it, the detection rate, and the number of outcomes at the
halt bounds the exposure the statistics alone allow.

Looking after *every* outcome is the worst case for false halts: the real evaluator looks
once per tick and counts devices still in flight as not failed, so its halts are a subset of
these paths (see otaguard.rollout.checks). docs/rollout.md quotes these figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otaguard.rollout import Policy, stats
from otaguard.rollout.policy import Method


@dataclass(frozen=True)
class HaltRisk:
    rate: float  # the release's true failure probability
    outcomes: int  # the wave's size in outcomes
    halt_probability: float  # P(the halt test fires within `outcomes` outcomes)
    mean_outcomes_at_halt: float | None  # E[outcomes seen at the halt | halted]


def halt_boundary(policy: Policy, n_max: int) -> np.ndarray:
    """For each n (0..n_max), the fewest failures among n outcomes that halt (n + 1 if none)."""
    halt = policy.halt
    sprt = stats.Sprt(
        halt.acceptable_failure_rate, halt.failure_threshold, 1 - halt.confidence, halt.sprt_beta
    )

    def fires(k: int, n: int) -> bool:
        if n < halt.min_sample:
            return False
        wilson = Method.WILSON in halt.methods and (
            stats.wilson_lower(k, n, halt.confidence) > halt.failure_threshold
        )
        return wilson or (Method.SPRT in halt.methods and sprt.llr(k, n) >= sprt.upper)

    boundary = np.empty(n_max + 1, dtype=np.int64)
    low = 0
    for n in range(n_max + 1):
        # the test is monotone in k, and the boundary in n never drops by more than one
        low = max(0, low - 1)
        high = n + 1
        if not fires(n, n):
            boundary[n] = n + 1
            continue
        while low < high:
            middle = (low + high) // 2
            if fires(middle, n):
                high = middle
            else:
                low = middle + 1
        boundary[n] = low
    return boundary


def halt_risk(
    policy: Policy,
    rate: float,
    outcomes: int,
    boundary: np.ndarray | None = None,
) -> HaltRisk:
    """``boundary`` from :func:`halt_boundary` (for at least ``outcomes``) saves recomputing it
    for each rate."""
    if boundary is None or boundary.size < outcomes + 1:
        boundary = halt_boundary(policy, outcomes)
    alive = np.zeros(outcomes + 2)
    alive[0] = 1.0
    halted = weighted = 0.0
    for n in range(1, outcomes + 1):
        alive[1 : n + 1] = alive[1 : n + 1] * (1 - rate) + alive[0:n] * rate
        alive[0] *= 1 - rate
        cut = boundary[n]
        if cut <= n:
            mass = float(alive[cut : n + 1].sum())
            alive[cut : n + 1] = 0.0
            halted += mass
            weighted += mass * n
    return HaltRisk(rate, outcomes, halted, weighted / halted if halted > 0 else None)
