"""Cohorts: deterministic, nested, keyed; the fast hasher and the vectorised path agree."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout import (
    DEFAULT,
    CohortHasher,
    bucket,
    create,
    parse_policy,
    plan_waves,
    state_from_dict,
    state_to_dict,
)
from otaguard.rollout.cohort import BUCKET_SPACE
from otaguard.rollout.policy import Waves

KEY = bytes(range(32))


def test_bucket_is_the_top_53_bits_of_hmac_sha256() -> None:
    # independent of the code under test: RFC 2104 HMAC over the length-prefixed ids
    message = (8).to_bytes(4, "big") + b"campaign" + b"vehicle-42"
    mac = hmac.new(KEY, message, hashlib.sha256).digest()
    assert bucket(KEY, "campaign", "vehicle-42") == int.from_bytes(mac[:8], "big") >> 11


def test_ids_cannot_collide_by_moving_the_separator() -> None:
    assert bucket(KEY, "ab", "c") != bucket(KEY, "a", "bc")


def test_the_key_decides_the_cohort() -> None:
    other = bytes(32)
    ids = [f"v{i}" for i in range(200)]
    assert [bucket(KEY, "c", i) for i in ids] != [bucket(other, "c", i) for i in ids]


@given(
    key=st.binary(min_size=0, max_size=100),
    campaign=st.text(max_size=20),
    ids=st.lists(st.text(max_size=30), max_size=20),
)
def test_fast_hasher_equals_hmac_digest(key: bytes, campaign: str, ids: list[str]) -> None:
    hasher = CohortHasher(key, campaign)
    prefixes = hasher.prefixes(ids)
    assert len(prefixes) == 8 * len(ids)
    for n, device in enumerate(ids):
        expected = bucket(key, campaign, device)
        assert int.from_bytes(prefixes[8 * n : 8 * n + 8], "big") >> 11 == expected
        assert hasher.bucket(device) == expected


_fractions = st.lists(st.floats(0.0001, 0.9999, allow_nan=False), max_size=8, unique=True).map(
    lambda xs: (*sorted(xs), 1.0)
)


@given(
    fractions=_fractions,
    population=st.integers(1, 10**7),
    min_devices=st.integers(1, 5000),
    buckets=st.lists(st.integers(0, BUCKET_SPACE - 1), max_size=50),
)
def test_waves_nest_and_never_change(
    fractions: tuple[float, ...], population: int, min_devices: int, buckets: list[int]
) -> None:
    plan = plan_waves(Waves(fractions, min_devices=min_devices), population)
    assert plan.cumulative[-1] == population and plan.thresholds[-1] == BUCKET_SPACE
    assert all(a < b for a, b in zip(plan.cumulative, plan.cumulative[1:], strict=False))
    assert all(a < b for a, b in zip(plan.thresholds, plan.thresholds[1:], strict=False))
    for k in range(plan.waves):
        assert plan.planned_size(k) >= min(
            min_devices, population - sum(plan.planned_size(j) for j in range(k))
        )
    for value in buckets:
        wave = plan.wave_of(value)
        assert wave == plan.wave_of(value)  # a pure function of the bucket
        # nested: in waves 0..k exactly when below threshold k, for every k
        for k in range(plan.waves):
            assert (wave <= k) == (value < plan.thresholds[k])


def test_default_plan_for_five_million() -> None:
    plan = plan_waves(DEFAULT.waves, 5_000_000)
    assert plan.cumulative == (5_000, 50_000, 500_000, 2_500_000, 5_000_000)


def test_small_fleets_get_waves_big_enough_to_judge() -> None:
    plan = plan_waves(DEFAULT.waves, 2_000)
    assert plan.cumulative == (1_000, 2_000)


def test_observed_wave_shares_follow_the_plan() -> None:
    plan = plan_waves(DEFAULT.waves, 100_000)
    hasher = CohortHasher(KEY, "campaign")
    counts = [0] * plan.waves
    for i in range(100_000):
        counts[plan.wave_of(hasher.bucket(f"d{i}"))] += 1
    for k, count in enumerate(counts):
        expected = plan.planned_size(k)
        assert abs(count - expected) < 6 * expected**0.5 + 1  # binomial spread


def test_plan_refuses_an_empty_fleet_and_wave_of_a_wild_bucket() -> None:
    with pytest.raises(ValueError):
        plan_waves(DEFAULT.waves, 0)
    with pytest.raises(ValueError):
        plan_waves(DEFAULT.waves, 10).wave_of(BUCKET_SPACE)


@given(
    fractions=_fractions,
    min_devices=st.integers(1, 50),
    buckets=st.lists(st.integers(0, BUCKET_SPACE - 1), min_size=1, max_size=300, unique=True),
)
def test_given_the_buckets_every_wave_has_exactly_its_planned_size(
    fractions: tuple[float, ...], min_devices: int, buckets: list[int]
) -> None:
    waves = Waves(fractions, min_devices=min_devices)
    plan = plan_waves(waves, len(buckets), buckets)
    assert plan.cumulative == plan_waves(waves, len(buckets)).cumulative
    assert plan.thresholds[-1] == BUCKET_SPACE
    assert all(a < b for a, b in zip(plan.thresholds, plan.thresholds[1:], strict=False))
    sizes = [0] * plan.waves
    for value in buckets:
        sizes[plan.wave_of(value)] += 1
    assert sizes == [plan.planned_size(k) for k in range(plan.waves)]


def test_an_exact_plan_is_a_plan_a_campaign_can_store() -> None:
    hasher = CohortHasher(KEY, "campaign")
    buckets = hasher.buckets(f"v{i}" for i in range(16))
    assert buckets == [bucket(KEY, "campaign", f"v{i}") for i in range(16)]
    policy = parse_policy("[waves]\nfractions = [0.5, 1.0]\nmin_devices = 1\n")
    state = create("campaign", policy, 16, by="rita", now=1.0, buckets=buckets)
    assert state_from_dict(state_to_dict(state)).plan == state.plan
    assert sum(state.plan.wave_of(b) == 0 for b in buckets) == 8


def test_equal_buckets_keep_the_thresholds_increasing() -> None:
    # only a 2^-53 chance per pair, but a stored plan must still be strictly increasing
    plan = plan_waves(Waves((0.25, 0.5, 1.0), min_devices=1), 4, [0, 0, 0, 0])
    assert plan.thresholds == (1, 2, BUCKET_SPACE)


def test_exact_plan_refuses_buckets_that_do_not_match_the_population() -> None:
    with pytest.raises(ValueError, match="3 buckets for a population of 4"):
        plan_waves(DEFAULT.waves, 4, [1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        plan_waves(DEFAULT.waves, 2, [1, BUCKET_SPACE])
