"""Counters: one report at a time, in bulk, and the reports they refuse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout import (
    FailureClass,
    HealthReport,
    HealthTally,
    Retried,
    Stage,
    Transition,
    WaveCounters,
)

OFFER = Transition(None, Stage.OFFERED)
START = Transition(Stage.OFFERED, Stage.DOWNLOADING)
INSTALL = Transition(Stage.DOWNLOADING, Stage.INSTALLED)
CONFIRM = Transition(Stage.INSTALLED, Stage.CONFIRMED)
BOOT_FAIL = Transition(Stage.INSTALLED, Stage.FAILED, FailureClass.BOOT)
SILENT = Transition(Stage.DOWNLOADING, Stage.SILENT)
LATE = Transition(Stage.SILENT, Stage.CONFIRMED)


def test_a_device_moves_through_the_stages() -> None:
    c = WaveCounters()
    for report in (OFFER, START, INSTALL, CONFIRM):
        c = c.add(report)
    assert (c.total, c.confirmed, c.in_flight, c.failures, c.outcomes) == (1, 1, 0, 0, 1)


def test_silent_counts_as_a_failure_until_the_device_reports() -> None:
    c = WaveCounters().add(OFFER).add(START).add(SILENT)
    assert (c.failures, c.in_flight, c.total) == (1, 0, 1)
    c = c.add(LATE)
    assert (c.failures, c.confirmed, c.total) == (0, 1, 1)


def test_retries_are_counted_but_are_not_failures() -> None:
    c = WaveCounters().add(OFFER).add(Retried(FailureClass.POWER), 3)
    assert c.retries == 3 and c.failures == 0


def test_bulk_add_equals_one_at_a_time() -> None:
    reports = [OFFER] * 5 + [START] * 5 + [INSTALL] * 4 + [CONFIRM] * 3 + [BOOT_FAIL]
    one = WaveCounters()
    for report in reports:
        one = one.add(report)
    bulk = WaveCounters().add(OFFER, 5).add(START, 5).add(INSTALL, 4).add(CONFIRM, 3).add(BOOT_FAIL)
    assert one == bulk
    assert (bulk.failed_boot, bulk.downloading, bulk.installed) == (1, 1, 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Transition(Stage.INSTALLED, Stage.FAILED),  # no class
        lambda: Transition(Stage.INSTALLED, Stage.CONFIRMED, FailureClass.BOOT),  # class, no fail
        lambda: Transition(Stage.CONFIRMED, Stage.FAILED, FailureClass.BOOT),  # final stage
        lambda: Transition(Stage.FAILED, Stage.CONFIRMED),
        lambda: Transition(Stage.OFFERED, Stage.OFFERED),
        lambda: Retried(FailureClass.VERIFICATION),  # deterministic: never retried
        lambda: HealthReport(-1.0),
        lambda: HealthReport(10.0, counts={"resets": -1}),
        lambda: HealthReport(10.0, metrics={"t": float("nan")}),
    ],
)
def test_impossible_reports_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_a_stage_cannot_go_below_zero() -> None:
    with pytest.raises(ValueError, match="more devices leave"):
        WaveCounters().add(CONFIRM)


def test_transient_classes() -> None:
    assert {c for c in FailureClass if c.transient} == {FailureClass.NETWORK, FailureClass.POWER}


@given(
    st.lists(st.tuples(st.floats(0, 1e4), st.integers(0, 50), st.floats(-1e3, 1e3)), max_size=30)
)
def test_health_tally_sums(reports: list[tuple[float, int, float]]) -> None:
    tally = HealthTally()
    for exposure, resets, metric in reports:
        tally = tally.add(HealthReport(exposure, counts={"resets": resets}, metrics={"m": metric}))
    half = len(reports) // 2
    left, right = HealthTally(), HealthTally()
    for exposure, resets, metric in reports[:half]:
        left = left.add(HealthReport(exposure, counts={"resets": resets}, metrics={"m": metric}))
    for exposure, resets, metric in reports[half:]:
        right = right.add(HealthReport(exposure, counts={"resets": resets}, metrics={"m": metric}))
    merged = left + right
    assert merged.devices == tally.devices == len(reports)
    assert merged.counts.get("resets", 0) == sum(r for _, r, _ in reports)
    n, mean, var = tally.mean_var("m")
    assert n == len(reports)
    if n:
        values = [m for _, _, m in reports]
        assert mean == pytest.approx(sum(values) / n, abs=1e-6)
    if n > 1:
        mu = sum(values) / n
        assert var == pytest.approx(
            sum((v - mu) ** 2 for v in values) / (n - 1), rel=1e-6, abs=1e-4
        )
