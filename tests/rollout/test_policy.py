"""The rollout policy parser: defaults, every refusal, round trips and fuzzing."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otaguard.errors import RolloutPolicyError, UsageError
from otaguard.rollout import DEFAULT, Policy, parse_policy, policy_from_mapping
from otaguard.rollout.policy import Method, Retry

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rollout.md"


def test_empty_file_is_the_default_policy() -> None:
    assert parse_policy("") == DEFAULT == Policy()


def test_default_round_trips_through_toml() -> None:
    assert parse_policy(DEFAULT.to_toml()) == DEFAULT
    assert policy_from_mapping(DEFAULT.to_dict()) == DEFAULT


def test_documented_default_is_the_code_default() -> None:
    text = DOCS.read_text("utf-8")
    block = re.search(r"<!-- default-policy -->\n```toml\n(.*?)```", text, re.S)
    assert block, "docs/rollout.md lost its default-policy block"
    assert parse_policy(block.group(1)) == DEFAULT
    assert block.group(1) == DEFAULT.to_toml()


def test_a_file_says_only_what_differs() -> None:
    policy = parse_policy("[halt]\nfailure_threshold = 0.05\n")
    assert policy.halt.failure_threshold == 0.05
    assert policy.waves == DEFAULT.waves and policy.health == DEFAULT.health


def test_growth_waves() -> None:
    policy = parse_policy("[waves.growth]\nstart = 0.001\nfactor = 4\ncap = 0.25\n")
    fractions = policy.waves.fractions
    assert fractions[:5] == pytest.approx((0.001, 0.004, 0.016, 0.064, 0.256))
    steps = [b - a for a, b in itertools.pairwise(fractions)]
    assert max(steps) <= 0.25 + 1e-12 and fractions[-1] == 1.0
    assert parse_policy(policy.to_toml()) == policy


def test_health_checks_replace_the_defaults_and_can_be_turned_off() -> None:
    policy = parse_policy(
        """
[[health.metrics]]
name = "boot_time_ms"
max_difference = 50
[[health.proportions]]
name = "heartbeat_lost"
max_difference = 0.01
"""
    )
    assert policy.health.rates == ()
    assert policy.health.metrics[0].name == "boot_time_ms"
    assert parse_policy(policy.to_toml()) == policy
    off = parse_policy("[health]\nrates = []\n")
    assert not off.health.configured and parse_policy(off.to_toml()) == off


def test_retry_backoff() -> None:
    retry = Retry(max_attempts=4, initial_backoff_s=60, backoff_factor=2, max_backoff_s=150)
    assert [retry.backoff(a) for a in (1, 2, 3, 4)] == [60, 120, 150, None]


REFUSALS = [
    ("[waves]\nfractions = [0.1, 0.05, 1.0]", "must increase"),
    ("[waves]\nfractions = [0.1, 0.5]", "must end at 1.0"),
    ("[waves]\nfractions = []", "1 to 64 waves"),
    ("[waves]\nfractions = [0, 1.0]", "not in (0, 1]"),
    ("[waves]\nfractions = [true, 1.0]", "must hold numbers"),
    ("[waves]\nfractions = [0.5, 1.0]\n[waves.growth]\nstart = 0.1", "not both"),
    ("[waves.growth]\nstart = 0.000001\nfactor = 1.0001", "more than 64 waves"),
    ("[waves.growth]\nfactor = 1", "waves.growth.factor must be in (1, 1000]"),
    ("[waves]\nmin_soak_s = -1", "waves.min_soak_s must be in [0,"),
    ("[waves]\nmin_soak_s = nan", "waves.min_soak_s must be in"),
    ("[waves]\nmin_soak_s = inf", "waves.min_soak_s must be in"),
    ("[waves]\nmin_devices = 1.5", "waves.min_devices must be an integer"),
    ("[waves]\nmin_devices = true", "waves.min_devices must be an integer"),
    ("[halt]\nconfidence = 1", "halt.confidence must be in (0.5, 0.999999]"),
    ("[halt]\nconfidence = 0.5", "halt.confidence must be in (0.5"),
    ("[halt]\nfailure_threshold = 0", "halt.failure_threshold must be in (0, 0.5]"),
    ("[halt]\nfailure_threshold = 0.02\nacceptable_failure_rate = 0.02", "must be below"),
    ("[halt]\nmethods = []", "at least one method"),
    ("[halt]\nmethods = ['wald']", "is not one of"),
    ("[halt]\nmethods = ['sprt', 'sprt']", "given twice"),
    ("[halt]\nmin_sample = 0", "halt.min_sample must be in [1,"),
    ("[halt]\ndeadline_s = 0", "halt.deadline_s must be in (0,"),
    ("[halt]\nrevert_on_halt = 'yes'", "must be true or false"),
    ("[halt]\nthreshold = 0.1", "unknown key halt.threshold"),
    ("[rollout]\nx = 1", "unknown key rollout"),
    ("halt = 3", "halt must be a table"),
    ("[[health.rates]]\nname = 'Resets!'", "must be a name like"),
    ("[[health.rates]]\nname = 'r'\n[[health.metrics]]\nname = 'r'", "given twice"),
    ("[[health.rates]]\nname = 'r'\nmax_ratio = 0.5", "max_ratio must be in [1,"),
    ("[[health.rates]]\nname = 'r'\nratio = 2", "unknown key health.rates[0].ratio"),
    ("[health]\nrates = [1]", "health.rates[0] must be a table"),
    ("[health]\nmin_devices = 1", "health.min_devices must be in [2,"),
    ("[retry]\nmax_attempts = 0", "retry.max_attempts must be in [1, 20]"),
    ("[retry]\ninitial_backoff_s = 100\nmax_backoff_s = 10", "retry.max_backoff_s must be in"),
    ("[halt\n", "not valid TOML"),
    ("[advance]\nmin_confirmed = -1", "advance.min_confirmed must be in [0,"),
]


@pytest.mark.parametrize("text,message", REFUSALS)
def test_bad_policies_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(RolloutPolicyError) as info:
        parse_policy(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_non_utf8_is_refused() -> None:
    with pytest.raises(RolloutPolicyError, match="not UTF-8"):
        parse_policy(b"\xff\xfe[halt]")


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_KEYS = st.sampled_from(
    [
        "waves", "advance", "halt", "health", "retry", "fractions", "growth", "start", "factor",
        "cap", "min_devices", "min_soak_s", "min_confirmed", "require_health",
        "failure_threshold", "confidence", "min_sample", "methods", "acceptable_failure_rate",
        "sprt_beta", "deadline_s", "revert_on_halt", "window_s", "rates", "proportions",
        "metrics", "name", "max_ratio", "max_difference", "higher_is_worse", "max_attempts",
        "initial_backoff_s", "backoff_factor", "max_backoff_s", "sprt", "wilson", "extra",
    ]
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=12,
)


_SECTIONS = st.sampled_from(["waves", "advance", "halt", "health", "retry", "extra"])


@given(st.dictionaries(_SECTIONS, st.dictionaries(_KEYS, _VALUES, max_size=6), max_size=5))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_any_mapping_gives_a_policy_or_a_policy_error(data: dict[str, Any]) -> None:
    try:
        policy = policy_from_mapping(data)
    except RolloutPolicyError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_policy(policy.to_toml()) == policy


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_any_text_gives_a_policy_or_a_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except RolloutPolicyError:
        pass


_fraction_lists = st.lists(
    st.floats(0.0001, 0.9999, allow_nan=False), min_size=0, max_size=10, unique=True
).map(lambda xs: [*sorted(xs), 1.0])


@given(
    fractions=_fraction_lists,
    threshold=st.floats(0.001, 0.5),
    confidence=st.floats(0.51, 0.999),
    methods=st.sampled_from([["wilson"], ["sprt"], ["sprt", "wilson"]]),
    soak=st.floats(0, 86400),
    attempts=st.integers(1, 20),
)
def test_valid_policies_round_trip(
    fractions: list[float],
    threshold: float,
    confidence: float,
    methods: list[str],
    soak: float,
    attempts: int,
) -> None:
    data = {
        "waves": {"fractions": fractions, "min_soak_s": soak},
        "halt": {
            "failure_threshold": threshold,
            "acceptable_failure_rate": threshold / 3,
            "confidence": confidence,
            "methods": methods,
        },
        "retry": {"max_attempts": attempts},
    }
    policy = policy_from_mapping(data)
    assert policy.halt.methods == tuple(Method(m) for m in methods)
    assert policy.waves.fractions == tuple(fractions)
    assert parse_policy(policy.to_toml()) == policy
