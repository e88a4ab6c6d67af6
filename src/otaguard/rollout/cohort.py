"""Deterministic cohorts: which wave of a campaign each device belongs to.

A device's **bucket** is the first 53 bits of HMAC-SHA256(cohort key, campaign id, device id)
(the two ids length-prefixed, so no pair of ids can collide by shifting a separator). Wave k
covers the buckets below an integer threshold T_k, and the thresholds increase, so:

* a device's wave never changes: it depends only on the key, the two ids and the plan;
* waves nest: the devices of waves 0..k are a subset of those of waves 0..k+1;
* nobody without the key can predict or steer which devices go first (the server keeps the key
  with the campaign; a keyless hash would let a device id be chosen to land in wave 0).

The plan fixes the thresholds once, from the policy's cumulative fractions and the number of
devices the selector matched at creation, raised so that every wave adds at least
``waves.min_devices`` devices (a 0.1 % first wave of a 2,000-device fleet would be 2 devices,
too few for any statistics). Given those devices' buckets, it places each threshold so that
the wave has exactly its planned size (the server does, for selections of up to
``otaguard.server.services.campaigns.EXACT_PLAN_LIMIT`` devices).

All comparisons are on integers, so the scalar path here and the simulator's NumPy path
(``otaguard.sim``) give the same wave for the same bucket.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from otaguard.rollout.policy import Waves

BUCKET_BITS = 53
BUCKET_SPACE = 1 << BUCKET_BITS
_PREFIX = 8  # bytes of the MAC used: 64 bits, of which the top 53 make the bucket


def _message(campaign_id: str, device_id: str) -> bytes:
    campaign = campaign_id.encode("utf-8")
    return len(campaign).to_bytes(4, "big") + campaign + device_id.encode("utf-8")


def bucket(key: bytes, campaign_id: str, device_id: str) -> int:
    """The device's bucket in [0, 2^53): HMAC-SHA256 (RFC 2104) through ``hmac.digest``."""
    mac = hmac.digest(key, _message(campaign_id, device_id), "sha256")
    return int.from_bytes(mac[:_PREFIX], "big") >> (64 - BUCKET_BITS)


class CohortHasher:
    """The same HMAC for many devices of one campaign, about twice as fast per device.

    RFC 2104: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)). The two padded-key blocks (and
    the campaign part of m) are hashed once here and copied per device, which is what
    ``hmac.digest`` recomputes on every call. ``tests/rollout/test_cohort.py`` checks that both
    paths give the same bucket.
    """

    def __init__(self, key: bytes, campaign_id: str) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._inner.update(_message(campaign_id, ""))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def prefixes(self, device_ids: Iterable[str]) -> bytes:
        """The first 8 bytes of each device's MAC, concatenated (big-endian 64-bit values whose
        top 53 bits are the bucket): compact input for a vectorised reader."""
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        parts: list[bytes] = []
        append = parts.append
        for device_id in device_ids:
            h = inner_copy()
            h.update(device_id.encode("utf-8"))
            o = outer_copy()
            o.update(h.digest())
            append(o.digest()[:_PREFIX])
        return b"".join(parts)

    def bucket(self, device_id: str) -> int:
        return self.buckets([device_id])[0]

    def buckets(self, device_ids: Iterable[str]) -> list[int]:
        prefixes = self.prefixes(device_ids)
        shift = 64 - BUCKET_BITS
        return [
            int.from_bytes(prefixes[i : i + _PREFIX], "big") >> shift
            for i in range(0, len(prefixes), _PREFIX)
        ]


@dataclass(frozen=True)
class WavePlan:
    """The campaign's waves, fixed at creation: cumulative device counts and bucket thresholds."""

    population: int
    cumulative: tuple[int, ...]  # planned devices covered after each wave
    thresholds: tuple[int, ...]  # a device is in waves 0..k when its bucket < thresholds[k]

    @property
    def waves(self) -> int:
        return len(self.cumulative)

    def planned_size(self, wave: int) -> int:
        """Devices the wave adds, in expectation (the hash spreads them binomially around it)."""
        return self.cumulative[wave] - (self.cumulative[wave - 1] if wave else 0)

    def fraction(self, wave: int) -> float:
        return self.cumulative[wave] / self.population

    def wave_of(self, bucket_value: int) -> int:
        """The first wave whose threshold is above the bucket (every bucket is below the last)."""
        if not 0 <= bucket_value < BUCKET_SPACE:
            raise ValueError(f"bucket {bucket_value} outside [0, 2^{BUCKET_BITS})")
        return bisect.bisect_right(self.thresholds, bucket_value)


def plan_waves(waves: Waves, population: int, buckets: Sequence[int] | None = None) -> WavePlan:
    """Cumulative counts ceil(f_k * N), each wave adding at least ``min_devices``; waves that
    would add nothing once the selection is covered are dropped.

    Without ``buckets`` the thresholds are the counts' shares of the bucket space, so a wave's
    size is binomial around its plan. Given the selection's buckets (one per device, as many as
    ``population``), each threshold is placed just above the last device of its wave: the
    selection's waves then have exactly their planned sizes. That matters for small waves: an
    8-device wave that the hash made 4 devices may never give the advance test the evidence
    it needs, and the campaign would wait in it forever. Devices enrolled later fall by the
    same thresholds.
    """
    if population < 1:
        raise ValueError(f"a campaign needs at least one device, got {population}")
    if buckets is not None and len(buckets) != population:
        raise ValueError(f"{len(buckets)} buckets for a population of {population}")
    cumulative: list[int] = []
    for fraction in waves.fractions:
        previous = cumulative[-1] if cumulative else 0
        # ceil(f * N) on the decimal the policy wrote (0.001, not the binary float just above it)
        share = Fraction(repr(fraction)) * population
        target = min(population, max(math.ceil(share), previous + waves.min_devices))
        cumulative.append(target)
        if target == population:
            break
    if buckets is None:
        thresholds = tuple(count * BUCKET_SPACE // population for count in cumulative)
    else:
        thresholds = _exact_thresholds(cumulative, buckets)
    return WavePlan(population, tuple(cumulative), thresholds)


def _exact_thresholds(cumulative: Sequence[int], buckets: Sequence[int]) -> tuple[int, ...]:
    """Threshold k = the smallest bucket outside waves 0..k, so exactly ``cumulative[k]``
    devices are below it. Kept strictly increasing and at least 1 (what a stored plan must
    be); only equal buckets, a 2^-53 chance per pair, could make that move a device."""
    ordered = sorted(buckets)
    if ordered and not 0 <= ordered[0] <= ordered[-1] < BUCKET_SPACE:
        raise ValueError(f"a bucket outside [0, 2^{BUCKET_BITS})")
    out: list[int] = []
    for count in cumulative:
        edge = BUCKET_SPACE if count == len(ordered) else ordered[count]
        out.append(max(edge, (out[-1] if out else 0) + 1))
    return tuple(out)
