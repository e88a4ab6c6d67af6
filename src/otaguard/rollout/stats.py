"""The statistics a rollout decides on, in pure Python (``math`` and ``statistics`` only).

Why pure Python: the fleet server runs the evaluator once per tick and must not need SciPy;
every function here is checked against ``scipy.stats`` on a grid in
``tests/rollout/test_stats.py`` (SciPy is a development dependency only).

* Failure rate of a release: the one-sided **Wilson score** bounds (Wilson 1927) and **Wald's
  sequential probability ratio test** for a Bernoulli rate (Wald 1945, section 5).
* Health of updated devices against a control group of devices not yet updated: a conditional
  binomial test on two **Poisson rates** (resets, crashes per device-second; Przyborowski and
  Wilenski 1940), a one-sided **two-proportion** z test (devices that lost their heartbeat),
  and **Welch's t test** for custom numeric metrics. Each returns a one-sided p-value for
  "updated devices are worse than control by more than the allowed margin".

The special functions (the regularised incomplete beta function, hence the binomial tail and
Student's t distribution) follow Numerical Recipes (3rd ed., 6.4): a continued fraction
evaluated with the modified Lentz method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist

_NORMAL = NormalDist()


def z_value(confidence: float) -> float:
    """The one-sided standard normal quantile for ``confidence`` (0.95 -> 1.645)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return _NORMAL.inv_cdf(confidence)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate in the far tail (erfc, no 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k} n={n}")


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    z2 = z * z
    p = k / n
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # The score interval contains 0 exactly when k = 0 (and 1 when k = n); say so exactly
    # rather than leave a rounding residue of 1e-17 that a threshold of 0 would trip on.
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return lower, upper


def wilson_lower(k: int, n: int, confidence: float) -> float:
    """One-sided lower Wilson score bound: the true rate is above it with ``confidence``.

    ``n = 0`` gives 0 (nothing is known). The halt rule: the failure rate is above the
    threshold with ``confidence`` when this bound is.
    """
    return _wilson(k, n, confidence)[0]


def wilson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper Wilson score bound: the true rate is below it with ``confidence``.

    ``n = 0`` gives 1. The advance rule: the failure rate is below the threshold with
    ``confidence`` when this bound is. With k = 0 it is z^2 / (n + z^2), close to the "rule of
    three" (3/n at 95 %) for large n.
    """
    return _wilson(k, n, confidence)[1]


class SprtVerdict(Enum):
    """Where Wald's log-likelihood ratio stands against its two boundaries."""

    ACCEPT_P0 = "accept-p0"  # at or below log(beta / (1 - alpha)): the rate is acceptable
    CONTINUE = "continue"
    REJECT_P0 = "reject-p0"  # at or above log((1 - beta) / alpha): the rate is bad


@dataclass(frozen=True)
class Sprt:
    """Wald's test of H0: p = p0 (acceptable) against H1: p = p1 (bad), p0 < p1.

    ``alpha`` = P(reject H0 | p0), the chance of halting an acceptable release; ``beta`` =
    P(accept H0 | p1), the chance of passing a bad one. Wald's boundaries keep both
    (approximately, conservatively) for a test that stops at the first crossing. A rollout does
    not stop watching after accepting: it keeps testing, and then Ville's inequality still bounds
    the chance that the ratio ever reaches the upper boundary under p <= p0 by
    alpha / (1 - beta), however many reports arrive.
    """

    p0: float
    p1: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not 0.0 < self.p0 < self.p1 < 1.0:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0} p1={self.p1}")
        if not (0.0 < self.alpha < 0.5 and 0.0 < self.beta < 0.5):
            raise ValueError(f"need alpha, beta in (0, 0.5), got {self.alpha}, {self.beta}")

    @property
    def upper(self) -> float:
        """log((1 - beta) / alpha): at or above it, H0 is rejected (halt)."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """log(beta / (1 - alpha)): at or below it, H0 is accepted."""
        return math.log(self.beta / (1.0 - self.alpha))

    def llr(self, k: int, n: int) -> float:
        """log L(p1) / L(p0) after k failures in n Bernoulli trials (the binomial
        coefficient cancels, so the order of the reports does not matter)."""
        _check_counts(k, n)
        return k * math.log(self.p1 / self.p0) + (n - k) * math.log(
            (1.0 - self.p1) / (1.0 - self.p0)
        )

    def verdict(self, k: int, n: int) -> SprtVerdict:
        value = self.llr(k, n)
        if value >= self.upper:
            return SprtVerdict.REJECT_P0
        if value <= self.lower:
            return SprtVerdict.ACCEPT_P0
        return SprtVerdict.CONTINUE


# --- special functions ------------------------------------------------------------------

_TINY = 1e-300
_EPS = 1e-15


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Numerical Recipes' betacf: the continued fraction of I_x(a, b), modified Lentz.

    It converges in O(sqrt(max(a, b))) terms for x below (a + 1) / (a + b + 2); the cap
    grows with that, so large counts (a wave of 500,000 devices) converge too.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000 + 10 * int(math.sqrt(max(a, b)))):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a} b={b} x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (scipy.special.betainc)."""
    if a <= 0.0 or b <= 0.0:
        raise ValueError(f"need a, b > 0, got {a}, {b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (note: scipy's ``binom.sf(k - 1, n, p)``)."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and p in [0, 1], got n={n} p={p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    return betainc(k, n - k + 1, p)


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if df <= 0.0:
        raise ValueError(f"need df > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0.0 else 1.0 - tail


# --- health against control -------------------------------------------------------------


def poisson_rate_test(
    events: int, exposure: float, control_events: int, control_exposure: float, ratio: float
) -> float:
    """One-sided p-value of H0: rate <= ratio * control rate, against "rate is higher".

    Conditional on the total x1 + x2, the updated group's count is binomial with
    p = ratio * t1 / (ratio * t1 + t2) at the boundary of H0 (exact, no normal approximation,
    so it stays right for the small counts of a first wave). No exposure on either side means
    no evidence: p-value 1.
    """
    if min(events, control_events) < 0 or ratio <= 0.0:
        raise ValueError("counts must be >= 0 and ratio > 0")
    if exposure <= 0.0 or control_exposure <= 0.0:
        return 1.0
    p = ratio * exposure / (ratio * exposure + control_exposure)
    return binom_sf(events, events + control_events, p)


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, margin: float) -> float:
    """One-sided p-value of H0: p1 - p2 <= margin, by the z test on the difference.

    Pooled standard error when margin is 0 (the usual test of equality), unpooled otherwise
    (the pooled estimate assumes p1 = p2, which a non-zero margin denies).
    """
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    p1, p2 = x1 / n1, x2 / n2
    if margin == 0.0:
        pooled = (x1 + x2) / (n1 + n2)
        se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    else:
        se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    difference = p1 - p2 - margin
    if se == 0.0:
        return 0.0 if difference > 0.0 else 1.0
    return normal_sf(difference / se)


def welch_test(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float, margin: float
) -> float:
    """One-sided p-value of H0: mean1 - mean2 <= margin (Welch's unequal-variance t test).

    Needs two observations on each side for a variance; fewer means no evidence (p-value 1).
    """
    if n1 < 2 or n2 < 2:
        return 1.0
    s1, s2 = max(var1, 0.0) / n1, max(var2, 0.0) / n2
    se2 = s1 + s2
    difference = mean1 - mean2 - margin
    if se2 == 0.0:
        return 0.0 if difference > 0.0 else 1.0
    df = se2 * se2 / (s1 * s1 / (n1 - 1) + s2 * s2 / (n2 - 1))
    return student_t_sf(difference / math.sqrt(se2), df)
