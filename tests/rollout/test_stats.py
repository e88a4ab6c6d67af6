"""The rollout statistics against SciPy on grids of n and k (SciPy is a dev dependency only)."""

from __future__ import annotations

import itertools
import math

import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout import stats

N_GRID = [1, 2, 3, 5, 10, 30, 50, 100, 137, 500, 1000, 5000, 50_000, 500_000]
CONFIDENCES = [0.8, 0.9, 0.95, 0.99, 0.999]


def _k_grid(n: int) -> list[int]:
    ks = {0, 1, 2, n // 100, n // 50, n // 20, n // 10, n // 4, n // 2, n - 1, n}
    return sorted(k for k in ks if 0 <= k <= n)


@pytest.mark.parametrize("n", N_GRID)
@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_wilson_bounds_match_scipy(n: int, confidence: float) -> None:
    for k in _k_grid(n):
        upper = scipy.stats.binomtest(k, n, alternative="less").proportion_ci(
            confidence, method="wilson"
        )
        lower = scipy.stats.binomtest(k, n, alternative="greater").proportion_ci(
            confidence, method="wilson"
        )
        assert stats.wilson_upper(k, n, confidence) == pytest.approx(upper.high, abs=1e-12)
        assert stats.wilson_lower(k, n, confidence) == pytest.approx(lower.low, abs=1e-12)
        assert stats.wilson_lower(k, n, confidence) <= k / n <= stats.wilson_upper(k, n, confidence)


def test_wilson_knows_nothing_without_data() -> None:
    assert stats.wilson_lower(0, 0, 0.95) == 0.0
    assert stats.wilson_upper(0, 0, 0.95) == 1.0


def test_zero_failures_bound_is_near_the_rule_of_three() -> None:
    # 0 failures in n bounds the rate by about 3/n at 95 % (the anchors' "rule of three");
    # the Wilson bound with one-sided z = 1.645 is z^2 / (n + z^2), a little tighter.
    for n in (300, 1000, 10_000):
        bound = stats.wilson_upper(0, n, 0.95)
        assert bound == pytest.approx(1.6448536**2 / (n + 1.6448536**2), rel=1e-6)
        assert bound < 3 / n


@pytest.mark.parametrize("k,n", [(-1, 3), (4, 3), (0, -1)])
def test_wilson_refuses_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        stats.wilson_upper(k, n, 0.95)


@pytest.mark.parametrize(
    "p0,p1,alpha,beta",
    [(0.005, 0.02, 0.05, 0.05), (0.01, 0.02, 0.01, 0.1), (0.1, 0.3, 0.05, 0.2)],
)
def test_sprt_log_likelihood_ratio_matches_scipy(
    p0: float, p1: float, alpha: float, beta: float
) -> None:
    test = stats.Sprt(p0, p1, alpha, beta)
    for n in N_GRID:
        for k in _k_grid(n):
            expected = scipy.stats.binom.logpmf(k, n, p1) - scipy.stats.binom.logpmf(k, n, p0)
            assert test.llr(k, n) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert test.upper == pytest.approx(math.log((1 - beta) / alpha))
    assert test.lower == pytest.approx(math.log(beta / (1 - alpha)))


def test_sprt_verdicts() -> None:
    test = stats.Sprt(0.01, 0.02, 0.05, 0.05)
    assert test.verdict(0, 0) is stats.SprtVerdict.CONTINUE
    assert test.verdict(10, 20) is stats.SprtVerdict.REJECT_P0
    assert test.verdict(0, 1000) is stats.SprtVerdict.ACCEPT_P0
    # each failure moves the ratio up by log(2), each success down by log(0.98 / 0.99)
    assert test.llr(1, 1) == pytest.approx(math.log(2))


@pytest.mark.parametrize("p0,p1", [(0.02, 0.01), (0.0, 0.1), (0.1, 1.0)])
def test_sprt_refuses_inverted_hypotheses(p0: float, p1: float) -> None:
    with pytest.raises(ValueError):
        stats.Sprt(p0, p1, 0.05, 0.05)


@pytest.mark.parametrize(
    "a,b", [(0.5, 0.5), (1, 1), (2.5, 7), (30, 1), (1, 5000), (250, 4750), (5000, 495_001)]
)
def test_incomplete_beta_matches_scipy(a: float, b: float) -> None:
    for x in (1e-6, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.99, 0.999999):
        assert stats.betainc(a, b, x) == pytest.approx(
            scipy.special.betainc(a, b, x), rel=1e-8, abs=1e-300
        )


@pytest.mark.parametrize("n", N_GRID)
def test_binomial_tail_matches_scipy(n: int) -> None:
    for k, p in itertools.product(_k_grid(n), (0.001, 0.02, 0.3, 0.5, 0.97)):
        expected = scipy.stats.binom.sf(k - 1, n, p)
        assert stats.binom_sf(k, n, p) == pytest.approx(expected, rel=1e-7, abs=1e-300)


@pytest.mark.parametrize("df", [1, 2, 3.7, 10, 29.5, 200, 10_000])
def test_student_t_tail_matches_scipy(df: float) -> None:
    for t in (-30, -3, -1, -0.1, 0, 0.1, 1, 2.5, 6, 40):
        assert stats.student_t_sf(t, df) == pytest.approx(
            scipy.stats.t.sf(t, df), rel=1e-8, abs=1e-300
        )


@pytest.mark.parametrize("ratio", [1.0, 1.5, 3.0])
def test_poisson_rate_test_matches_scipy_binomtest(ratio: float) -> None:
    grid = [(0, 100.0, 0, 1000.0), (3, 100.0, 10, 1000.0), (12, 50.0, 40, 1000.0)]
    grid += [(150, 5e5, 900, 5e6), (40, 1e4, 3000, 1e6), (0, 1e3, 500, 1e4)]
    for x1, t1, x2, t2 in grid:
        p = ratio * t1 / (ratio * t1 + t2)
        n = x1 + x2
        expected = scipy.stats.binomtest(x1, n, p, alternative="greater").pvalue if n else 1.0
        assert stats.poisson_rate_test(x1, t1, x2, t2, ratio) == pytest.approx(
            expected, rel=1e-8, abs=1e-300
        )


def test_poisson_rate_test_without_exposure_is_no_evidence() -> None:
    assert stats.poisson_rate_test(5, 0.0, 1, 100.0, 1.0) == 1.0
    assert stats.poisson_rate_test(5, 10.0, 1, 0.0, 1.0) == 1.0


@pytest.mark.parametrize("margin", [0.0, 0.01, 0.05])
def test_two_proportion_test_matches_scipy_normal(margin: float) -> None:
    for x1, n1, x2, n2 in [(5, 100, 10, 1000), (50, 1000, 200, 10_000), (0, 50, 3, 900)]:
        p1, p2 = x1 / n1, x2 / n2
        if margin == 0.0:
            pooled = (x1 + x2) / (n1 + n2)
            se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        else:
            se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        expected = scipy.stats.norm.sf((p1 - p2 - margin) / se)
        assert stats.two_proportion_test(x1, n1, x2, n2, margin) == pytest.approx(
            expected, rel=1e-9
        )


@pytest.mark.parametrize("margin", [0.0, 2.5])
def test_welch_test_matches_scipy(margin: float) -> None:
    cases = [
        (10, 105.0, 25.0, 12, 100.0, 16.0),
        (200, 1003.0, 900.0, 50_000, 1000.0, 1000.0),
        (3, 10.0, 1.0, 1000, 9.0, 4.0),
        (40, 99.0, 30.0, 400, 100.0, 30.0),
    ]
    for n1, m1, v1, n2, m2, v2 in cases:
        expected = scipy.stats.ttest_ind_from_stats(
            m1 - margin,
            math.sqrt(v1),
            n1,
            m2,
            math.sqrt(v2),
            n2,
            equal_var=False,
            alternative="greater",
        ).pvalue
        assert stats.welch_test(n1, m1, v1, n2, m2, v2, margin) == pytest.approx(expected, rel=1e-7)


def test_welch_test_needs_two_observations_each() -> None:
    assert stats.welch_test(1, 50.0, 0.0, 100, 1.0, 1.0, 0.0) == 1.0


@given(st.integers(0, 10_000), st.integers(1, 10_000), st.sampled_from(CONFIDENCES))
def test_wilson_bounds_are_ordered_and_monotone(k: int, n: int, confidence: float) -> None:
    k = min(k, n)
    lower, upper = stats.wilson_lower(k, n, confidence), stats.wilson_upper(k, n, confidence)
    assert 0.0 <= lower <= k / n <= upper <= 1.0
    if k < n:  # one more failure in the same sample can only raise both bounds
        assert stats.wilson_lower(k + 1, n, confidence) >= lower
        assert stats.wilson_upper(k + 1, n, confidence) >= upper
