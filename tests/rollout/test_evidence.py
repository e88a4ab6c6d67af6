"""How many confirmations the advance test needs, and the warning for a first wave below it."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout import DEFAULT, Policy, Stage, Transition, WaveCounters
from otaguard.rollout.checks import advance_test, evidence_needed, plan_warnings
from otaguard.rollout.policy import Method


def _confirmed(n: int) -> WaveCounters:
    c = WaveCounters().add(Transition(None, Stage.DOWNLOADING), n)
    return c.add(Transition(Stage.DOWNLOADING, Stage.CONFIRMED), n)


def _policy(threshold: float, acceptable: float, confidence: float, min_sample: int,
            methods: tuple[Method, ...]) -> Policy:  # fmt: skip
    halt = dataclasses.replace(
        DEFAULT.halt,
        failure_threshold=threshold,
        acceptable_failure_rate=acceptable,
        confidence=confidence,
        min_sample=min_sample,
        methods=methods,
    )
    return dataclasses.replace(DEFAULT, halt=halt)


@given(
    threshold=st.floats(0.05, 0.6),
    share=st.floats(0.05, 0.9),
    confidence=st.floats(0.6, 0.999),
    min_sample=st.integers(1, 40),
    methods=st.sampled_from([(Method.WILSON,), (Method.SPRT,), (Method.WILSON, Method.SPRT)]),
)
def test_evidence_needed_is_where_the_real_advance_test_first_passes(
    threshold: float, share: float, confidence: float, min_sample: int,
    methods: tuple[Method, ...],
) -> None:  # fmt: skip
    policy = _policy(threshold, threshold * share, confidence, min_sample, methods)
    needed = evidence_needed(policy)
    assert needed is not None
    assert advance_test(policy, 0, _confirmed(needed)).signal
    assert not advance_test(policy, 0, _confirmed(needed - 1)).signal


def test_the_default_policy_needs_hundreds_and_the_warning_says_what_happens() -> None:
    needed = evidence_needed(DEFAULT)
    assert needed is not None and 100 < needed < 1000
    assert plan_warnings(DEFAULT, (needed, 2 * needed)) == []
    (stuck,) = plan_warnings(DEFAULT, (needed - 1, 2 * needed))
    assert f"wave 0 holds {needed - 1} devices" in stuck and "stop at wave 0 for good" in stuck
    (never,) = plan_warnings(DEFAULT, (40,))
    assert "never be marked completed" in never and f"at least {needed}" in never
