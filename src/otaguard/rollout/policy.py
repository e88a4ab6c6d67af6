"""A rollout policy: waves, when a wave may advance, when the campaign halts, health, retries.

A policy is a frozen value read from TOML (``tomllib``) by :func:`parse_policy`, strictly: an
unknown key, a wrong type (a boolean where a number is expected, ``nan``) or a value out of its
range is refused with one line that names the key, as a :class:`RolloutPolicyError` (exit 2).
Keys left out take the values of :data:`DEFAULT` (documented in docs/rollout.md, used by
``fleet campaign create`` and ``otaguard sim`` without ``--policy``), so a file may say only
what differs. :meth:`Policy.to_toml` writes a policy back (the server stores it with the
campaign); parsing that text gives the same policy.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from otaguard.errors import RolloutPolicyError

#: More waves than this is a typo (a growth factor of 1.0001), not a rollout.
MAX_WAVES = 64
#: Longest soak, deadline or back-off a policy may name: 90 days, in seconds.
MAX_SECONDS = 90 * 86400.0
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Method(Enum):
    """How the failure rate is judged (docs/rollout.md compares them)."""

    WILSON = "wilson"
    SPRT = "sprt"


@dataclass(frozen=True)
class Growth:
    """Exponential waves: ``start``, then each wave adds ``factor - 1`` times what is already
    covered, but never more than ``cap`` of the fleet at once, until everything is covered."""

    start: float
    factor: float
    cap: float

    def fractions(self) -> tuple[float, ...]:
        covered = [self.start]
        while covered[-1] < 1.0:
            step = min(covered[-1] * (self.factor - 1.0), self.cap)
            covered.append(min(1.0, covered[-1] + step))
            if len(covered) > MAX_WAVES:
                raise RolloutPolicyError(
                    f"policy: waves.growth gives more than {MAX_WAVES} waves "
                    f"(start {self.start}, factor {self.factor}, cap {self.cap})"
                )
        return tuple(covered)


@dataclass(frozen=True)
class Waves:
    """Cumulative shares of the campaign's devices, the last one 1.0."""

    fractions: tuple[float, ...]
    growth: Growth | None = None  # kept so that to_toml() writes the policy as it was given
    min_devices: int = 1000  # every wave adds at least this many devices (small fleets)
    min_soak_s: float = 3600.0  # running time of a wave before it may advance


@dataclass(frozen=True)
class Advance:
    """What must hold, besides the soak time, before the next wave opens."""

    min_confirmed: int = 100  # confirmed devices in the current wave (capped at its planned size)
    require_health: bool = True  # health figures must exist (min_devices on both sides)


@dataclass(frozen=True)
class Halt:
    """When the failure rate stops the campaign, and what a halt does."""

    failure_threshold: float = 0.02  # a release failing more often than this is bad (SPRT's p1)
    confidence: float = 0.99  # one-sided; the SPRT uses alpha = 1 - confidence
    min_sample: int = 30  # devices with an outcome in a wave before it can be halted
    methods: tuple[Method, ...] = (Method.WILSON, Method.SPRT)
    acceptable_failure_rate: float = 0.01  # SPRT's p0: false halts below it are <= alpha
    sprt_beta: float = 0.05  # SPRT: chance of accepting a release failing at the threshold
    deadline_s: float = 12 * 3600.0  # offered, no outcome after this long: failed (silent)
    revert_on_halt: bool = True  # devices in trial boot are told to revert


@dataclass(frozen=True)
class RateCheck:
    """Events per device-second (resets, crashes): halt when the updated devices' rate exceeds
    ``max_ratio`` times the control group's, with the health confidence."""

    name: str
    max_ratio: float


@dataclass(frozen=True)
class ProportionCheck:
    """Share of devices flagged (heartbeat lost): halt when the updated devices' share exceeds
    the control group's by more than ``max_difference``."""

    name: str
    max_difference: float


@dataclass(frozen=True)
class MetricCheck:
    """A custom numeric metric per device (boot time, temperature): halt when the updated
    devices' mean is worse than the control group's by more than ``max_difference``."""

    name: str
    max_difference: float
    higher_is_worse: bool = True


@dataclass(frozen=True)
class Health:
    """Post-update health against a control group (devices of the selector not yet updated)."""

    confidence: float = 0.99
    min_devices: int = 100  # on each side, before health can halt (or allow an advance)
    window_s: float = 3600.0  # how long a device reports health after confirming
    rates: tuple[RateCheck, ...] = (RateCheck("resets", 1.5), RateCheck("crashes", 1.5))
    proportions: tuple[ProportionCheck, ...] = ()
    metrics: tuple[MetricCheck, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.rates or self.proportions or self.metrics)


@dataclass(frozen=True)
class Retry:
    """Back-off for transient failures (network, power); deterministic ones never retry."""

    max_attempts: int = 5  # attempts in all, the first included (1 = no retry)
    initial_backoff_s: float = 60.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 3600.0

    def backoff(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); None: give up."""
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        if attempt >= self.max_attempts:
            return None
        return min(
            self.max_backoff_s, self.initial_backoff_s * self.backoff_factor ** (attempt - 1)
        )


@dataclass(frozen=True)
class Policy:
    waves: Waves = field(default_factory=lambda: Waves((0.001, 0.01, 0.1, 0.5, 1.0)))
    advance: Advance = field(default_factory=Advance)
    halt: Halt = field(default_factory=Halt)
    health: Health = field(default_factory=Health)
    retry: Retry = field(default_factory=Retry)

    def to_toml(self) -> str:
        from otaguard.rollout._policy_toml import dump

        return dump(self)

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (what :func:`policy_from_mapping` reads back)."""
        return tomllib.loads(self.to_toml())


#: The documented default policy (docs/rollout.md, "The default policy").
DEFAULT = Policy()


def parse_policy(text: str | bytes) -> Policy:
    """Read a TOML policy; keys left out take :data:`DEFAULT`'s values."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise RolloutPolicyError("policy: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RolloutPolicyError(f"policy: not valid TOML: {exc}") from None
    return policy_from_mapping(data)


def policy_from_mapping(data: Mapping[str, Any]) -> Policy:
    """Validate plain data (parsed TOML, or a policy's ``to_dict()`` stored as JSON)."""
    top = _Table(data, "")
    policy = Policy(
        waves=_waves(top.table("waves")),
        advance=_advance(top.table("advance")),
        halt=_halt(top.table("halt")),
        health=_health(top.table("health")),
        retry=_retry(top.table("retry")),
    )
    top.finish()
    return policy


class _Table:
    """Typed, range-checked reads from one TOML table; unknown keys are refused at finish()."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise RolloutPolicyError(f"policy: {where or 'the document'} must be a table")
        self.data = data
        self.where = where
        self.seen: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str) -> object:
        self.seen.add(key)
        return self.data.get(key)

    def table(self, key: str) -> _Table:
        value = self.get(key)
        return _Table({} if value is None else value, self.name(key))

    def number(
        self, key: str, default: float, low: float, high: float, *, open_low: bool = False
    ) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RolloutPolicyError(f"policy: {self.name(key)} must be a number")
        number = float(value)
        too_low = number <= low if open_low else number < low
        if not math.isfinite(number) or too_low or number > high:
            side = "(" if open_low else "["
            raise RolloutPolicyError(
                f"policy: {self.name(key)} must be in {side}{low:g}, {high:g}], got {value}"
            )
        return number

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise RolloutPolicyError(f"policy: {self.name(key)} must be an integer")
        if not low <= value <= high:
            raise RolloutPolicyError(
                f"policy: {self.name(key)} must be in [{low}, {high}], got {value}"
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise RolloutPolicyError(f"policy: {self.name(key)} must be true or false")
        return value

    def array(self, key: str) -> list[object] | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise RolloutPolicyError(f"policy: {self.name(key)} must be an array")
        return value

    def finish(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.seen)
        if unknown:
            raise RolloutPolicyError(f"policy: unknown key {self.name(unknown[0])}")


def _waves(table: _Table) -> Waves:
    default = DEFAULT.waves
    fractions_value = table.array("fractions")
    growth_value = table.get("growth")
    if fractions_value is not None and growth_value is not None:
        raise RolloutPolicyError("policy: waves: give fractions or growth, not both")
    growth = None
    if growth_value is not None:
        g = table.table("growth")
        growth = Growth(
            start=g.number("start", 0.001, 0.0, 1.0, open_low=True),
            factor=g.number("factor", 10.0, 1.0, 1000.0, open_low=True),
            cap=g.number("cap", 1.0, 0.0, 1.0, open_low=True),
        )
        g.finish()
        fractions = growth.fractions()
    elif fractions_value is not None:
        fractions = _fractions(fractions_value, table.name("fractions"))
    else:
        fractions = default.fractions
    waves = Waves(
        fractions=fractions,
        growth=growth,
        min_devices=table.integer("min_devices", default.min_devices, 1, 10**9),
        min_soak_s=table.number("min_soak_s", default.min_soak_s, 0.0, MAX_SECONDS),
    )
    table.finish()
    return waves


def _fractions(values: list[object], where: str) -> tuple[float, ...]:
    if not 1 <= len(values) <= MAX_WAVES:
        raise RolloutPolicyError(f"policy: {where} must have 1 to {MAX_WAVES} waves")
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RolloutPolicyError(f"policy: {where} must hold numbers")
        number = float(value)
        if not (math.isfinite(number) and 0.0 < number <= 1.0):
            raise RolloutPolicyError(f"policy: {where}: {value} is not in (0, 1]")
        if out and number <= out[-1]:
            raise RolloutPolicyError(
                f"policy: {where} must increase (cumulative shares), got {out[-1]:g} then {value}"
            )
        out.append(number)
    if out[-1] != 1.0:
        raise RolloutPolicyError(f"policy: {where} must end at 1.0 (the whole selection)")
    return tuple(out)


def _advance(table: _Table) -> Advance:
    default = DEFAULT.advance
    advance = Advance(
        min_confirmed=table.integer("min_confirmed", default.min_confirmed, 0, 10**9),
        require_health=table.boolean("require_health", default.require_health),
    )
    table.finish()
    return advance


def _methods(values: list[object] | None, where: str) -> tuple[Method, ...]:
    if values is None:
        return DEFAULT.halt.methods
    known = {m.value: m for m in Method}
    out: list[Method] = []
    for value in values:
        if not isinstance(value, str) or value not in known:
            raise RolloutPolicyError(f"policy: {where}: {value!r} is not one of {sorted(known)}")
        if known[value] in out:
            raise RolloutPolicyError(f"policy: {where}: {value} given twice")
        out.append(known[value])
    if not out:
        raise RolloutPolicyError(f"policy: {where} must name at least one method")
    return tuple(out)


def _halt(table: _Table) -> Halt:
    default = DEFAULT.halt
    threshold = table.number(
        "failure_threshold", default.failure_threshold, 0.0, 0.5, open_low=True
    )
    acceptable = table.number(
        "acceptable_failure_rate",
        min(default.acceptable_failure_rate, threshold / 2),
        0.0,
        1.0,
        open_low=True,
    )
    if acceptable >= threshold:
        raise RolloutPolicyError(
            f"policy: halt.acceptable_failure_rate ({acceptable:g}) must be below "
            f"halt.failure_threshold ({threshold:g})"
        )
    halt = Halt(
        failure_threshold=threshold,
        confidence=table.number("confidence", default.confidence, 0.5, 0.999999, open_low=True),
        min_sample=table.integer("min_sample", default.min_sample, 1, 10**9),
        methods=_methods(table.array("methods"), table.name("methods")),
        acceptable_failure_rate=acceptable,
        sprt_beta=table.number("sprt_beta", default.sprt_beta, 0.0, 0.5, open_low=True),
        deadline_s=table.number("deadline_s", default.deadline_s, 0.0, MAX_SECONDS, open_low=True),
        revert_on_halt=table.boolean("revert_on_halt", default.revert_on_halt),
    )
    table.finish()
    return halt


def _checks(table: _Table, key: str) -> list[_Table]:
    values = table.array(key)
    if values is None:
        return []
    return [_Table(v, f"{table.name(key)}[{i}]") for i, v in enumerate(values)]


def _check_name(entry: _Table, names: set[str]) -> str:
    value = entry.get("name")
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise RolloutPolicyError(
            f"policy: {entry.name('name')} must be a name like resets or boot_time_ms"
        )
    if value in names:
        raise RolloutPolicyError(f"policy: health check {value} given twice")
    names.add(value)
    return value


def _health(table: _Table) -> Health:
    default = DEFAULT.health
    names: set[str] = set()
    given = {key for key in ("rates", "proportions", "metrics") if table.data.get(key) is not None}
    rates = []
    for entry in _checks(table, "rates"):
        rates.append(
            RateCheck(_check_name(entry, names), entry.number("max_ratio", 1.5, 1.0, 1000.0))
        )
        entry.finish()
    proportions = []
    for entry in _checks(table, "proportions"):
        proportions.append(
            ProportionCheck(
                _check_name(entry, names), entry.number("max_difference", 0.0, 0.0, 1.0)
            )
        )
        entry.finish()
    metrics = []
    for entry in _checks(table, "metrics"):
        metrics.append(
            MetricCheck(
                _check_name(entry, names),
                entry.number("max_difference", 0.0, 0.0, 1e12),
                entry.boolean("higher_is_worse", True),
            )
        )
        entry.finish()
    health = Health(
        confidence=table.number("confidence", default.confidence, 0.5, 0.999999, open_low=True),
        min_devices=table.integer("min_devices", default.min_devices, 2, 10**9),
        window_s=table.number("window_s", default.window_s, 0.0, MAX_SECONDS, open_low=True),
        # Any list given replaces the default checks (an empty `rates = []` turns them off).
        rates=tuple(rates) if given else default.rates,
        proportions=tuple(proportions) if given else default.proportions,
        metrics=tuple(metrics) if given else default.metrics,
    )
    table.finish()
    return health


def _retry(table: _Table) -> Retry:
    default = DEFAULT.retry
    initial = table.number(
        "initial_backoff_s", default.initial_backoff_s, 0.0, MAX_SECONDS, open_low=True
    )
    retry = Retry(
        max_attempts=table.integer("max_attempts", default.max_attempts, 1, 20),
        initial_backoff_s=initial,
        backoff_factor=table.number("backoff_factor", default.backoff_factor, 1.0, 10.0),
        max_backoff_s=table.number(
            "max_backoff_s", max(default.max_backoff_s, initial), initial, MAX_SECONDS
        ),
    )
    table.finish()
    return retry
