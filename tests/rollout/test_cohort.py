"""Cohorts: deterministic, nested, keyed; the fast hasher and the vectorised path agree."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout import DEFAULT, CohortHasher, bucket, plan_waves
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
