"""The exact halt-risk computation against brute force over every outcome sequence."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from otaguard.rollout import DEFAULT, stats
from otaguard.rollout.policy import Method
from otaguard.sim.risk import halt_boundary, halt_risk


def _brute(policy, rate: float, n: int) -> tuple[float, float]:
    halt = policy.halt
    sprt = stats.Sprt(
        halt.acceptable_failure_rate, halt.failure_threshold, 1 - halt.confidence, halt.sprt_beta
    )
    total = weighted = 0.0
    for outcomes in itertools.product((0, 1), repeat=n):
        k = 0
        for seen, failed in enumerate(outcomes, start=1):
            k += failed
            fires = seen >= halt.min_sample and (
                (Method.WILSON in halt.methods
                 and stats.wilson_lower(k, seen, halt.confidence) > halt.failure_threshold)
                or (Method.SPRT in halt.methods and sprt.llr(k, seen) >= sprt.upper)
            )  # fmt: skip
            if fires:  # weigh the whole sequence: its prefixes are shared by others
                ones = sum(outcomes)
                p = rate**ones * (1 - rate) ** (n - ones)
                total += p
                weighted += p * seen
                break
    return total, weighted


@pytest.mark.parametrize("methods", [(Method.WILSON,), (Method.SPRT,), tuple(Method)])
@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_dynamic_programme_equals_brute_force(methods: tuple[Method, ...], rate: float) -> None:
    halt = dataclasses.replace(
        DEFAULT.halt, failure_threshold=0.1, acceptable_failure_rate=0.02, min_sample=3,
        confidence=0.9, methods=methods,
    )  # fmt: skip
    policy = dataclasses.replace(DEFAULT, halt=halt)
    n = 12
    risk = halt_risk(policy, rate, n)
    probability, weighted = _brute(policy, rate, n)
    assert risk.halt_probability == pytest.approx(probability, rel=1e-9, abs=1e-15)
    if probability:
        assert risk.mean_outcomes_at_halt == pytest.approx(weighted / probability, rel=1e-9)


def test_boundary_is_the_smallest_failing_count() -> None:
    boundary = halt_boundary(DEFAULT, 400)
    assert all(boundary[n] == n + 1 for n in range(DEFAULT.halt.min_sample))
    n = 300
    k = int(boundary[n])
    assert (
        stats.wilson_lower(k, n, 0.99) > 0.02
        or stats.Sprt(0.01, 0.02, 0.01, 0.05).llr(k, n) >= stats.Sprt(0.01, 0.02, 0.01, 0.05).upper
    )
    assert stats.wilson_lower(k - 1, n, 0.99) <= 0.02
