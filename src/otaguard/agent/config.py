"""Every cap, timeout and retry rule of the device agent, in one place (tuf: ``UpdaterConfig``).

A field device meets dropped connections, captive portals, mirrors that
trickle bytes and power cuts; each is answered by one of these numbers. Tests
pass a config with small chunks and short delays; nothing else changes.

Failure classes (:class:`Failure`) decide what happens after something went
wrong. Transient classes are retried with capped exponential backoff and
jitter (:meth:`Backoff.delay`), each class counting its own attempts, until the
class's attempt budget is spent for this cycle (the next cycle starts afresh).
A verification refusal is never retried: it is reported (event ``refused``).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from otaguard.repo.fetcher import FetcherConfig
from otaguard.repo.trust import Limits


class Failure(enum.Enum):
    """Why a step did not complete; all but ``REFUSED`` are retried."""

    NETWORK = "network"  # connection refused/reset/cut, timeouts, name resolution
    SERVER = "server"  # 5xx, 429, 401 (re-enrol / clock), 404 on a mirror not yet in sync
    SLOW = "slow"  # the source stayed below the minimum rate: slow retrieval
    BAD_RESPONSE = "bad-response"  # a protocol violation: wrong Content-Range, broken JSON
    POWER = "power"  # the device lost power (the simulation's PowerLoss)
    REFUSED = "refused"  # a verification refusal: never retried, reported

    @property
    def transient(self) -> bool:
        return self is not Failure.REFUSED


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter for one failure class.

    The n-th retry (n = 1, 2, ...) waits ``min(cap, base * factor**(n-1))``
    scaled by a random factor in ``[1 - jitter, 1]`` ("equal jitter" for 0.5):
    devices that failed together do not retry together.
    """

    base: float = 2.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.5
    attempts: int = 8  # retries within one cycle before the cycle gives up

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff: base >= 0, factor >= 1, cap >= 0, 0 <= jitter <= 1")
        if self.attempts < 0:
            raise ValueError("backoff: attempts >= 0")

    def delay(self, attempt: int, rng: random.Random) -> float:
        if attempt < 1:
            return 0.0
        ceiling = min(self.cap, self.base * self.factor ** min(attempt - 1, 64))
        return ceiling * (1 - self.jitter * rng.random())


def _default_backoff() -> dict[Failure, Backoff]:
    return {
        Failure.NETWORK: Backoff(),
        Failure.SERVER: Backoff(base=5.0),
        Failure.SLOW: Backoff(base=10.0, attempts=4),
        Failure.BAD_RESPONSE: Backoff(base=5.0, attempts=4),
        Failure.POWER: Backoff(base=0.0, attempts=16),
    }


@dataclass(frozen=True)
class AgentConfig:
    """The agent's caps. Defaults suit a vehicle on a cellular link."""

    # -- downloads ------------------------------------------------------------------------
    #: Unit of resumption: a chunk is fsync'd and journaled with its hash once complete.
    chunk_size: int = 256 * 1024
    #: Slow retrieval: a source averaging less than this (bytes/s) over ``rate_window``
    #: seconds, after ``rate_grace`` seconds, is abandoned (retried later).
    min_rate: int = 2048
    rate_window: float = 30.0
    rate_grace: float = 10.0
    #: Largest target the agent accepts at all (the signed length is the real cap).
    max_target_length: int = 4 * 1024**3
    # -- HTTP -----------------------------------------------------------------------------
    connect_timeout: float = 10.0
    #: The longest wait for the next bytes of a response (a stalled connection).
    read_timeout: float = 30.0
    #: Largest device-API response body (the director's metadata is at most 1 MiB, base64).
    max_api_response: int = 2 * 1024 * 1024
    max_redirects: int = 3
    #: TUF metadata caps (lengths, rotations, delegations).
    tuf_limits: Limits = field(default_factory=Limits)
    # -- the loop -------------------------------------------------------------------------
    #: Seconds between check-ins when the server names none.
    poll_interval: float = 900.0
    #: Events kept for the server while it cannot be reached (oldest dropped first).
    max_outbox: int = 1000
    #: Events per POST (the server's cap).
    event_batch: int = 100
    #: Transitions in one cycle before the agent stops and calls it a bug (a loop).
    max_steps: int = 200
    backoff: dict[Failure, Backoff] = field(default_factory=_default_backoff)
    # -- campaigns (docs/server.md, the campaign contract) --------------------------------
    #: Seconds of health observed after a confirmed update before it is reported (for the
    #: campaign), and between the reports of a device not updated (control).
    health_window_s: float = 3600.0
    #: Before confirming a campaign's update, check in once more: a halt with
    #: ``revert`` then leaves the trial for the confirmed image (no report would come
    #: otherwise until after the confirm, when reverting is no longer possible).
    trial_checkin: bool = True
    #: Subscribe to the topics the server names for "check in now" (MQTT push).
    mqtt: bool = True
    #: Random delay before a pushed check-in when the message names no spread (herd).
    push_spread_s: float = 60.0
    #: At most one pushed check-in per this many seconds, whatever the message rate.
    push_min_gap_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= 64 * 1024 * 1024:
            raise ValueError("chunk_size must be between 1 byte and 64 MiB")
        if self.min_rate < 0 or self.rate_window <= 0 or self.rate_grace < 0:
            raise ValueError("min_rate >= 0, rate_window > 0, rate_grace >= 0")
        if not 1 <= self.max_outbox <= 10_000:
            raise ValueError("max_outbox must be between 1 and 10000 (the state file's cap)")
        if not 1 <= self.event_batch <= 100:
            raise ValueError("event_batch must be between 1 and 100 (the server's cap)")
        if not 0 < self.health_window_s <= 7 * 86400:
            raise ValueError("health_window_s must be above 0 and at most 7 days")
        if self.push_spread_s < 0 or self.push_min_gap_s < 0:
            raise ValueError("push_spread_s and push_min_gap_s must not be negative")
        missing = {f for f in Failure if f.transient} - set(self.backoff)
        if missing:
            raise ValueError(f"no backoff for {sorted(f.value for f in missing)}")

    def backoff_for(self, failure: Failure) -> Backoff:
        return self.backoff[failure]

    def fetcher_config(self) -> FetcherConfig:
        """The TUF metadata fetcher's caps, from these (one set of timeouts for all HTTP)."""
        return FetcherConfig(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            min_speed=max(1, self.min_rate),
            grace_seconds=max(1.0, self.rate_grace + self.rate_window),
            max_redirects=self.max_redirects,
        )


_SCALARS = {
    "chunk_size": int,
    "min_rate": int,
    "rate_window": float,
    "rate_grace": float,
    "max_target_length": int,
    "connect_timeout": float,
    "read_timeout": float,
    "max_api_response": int,
    "max_redirects": int,
    "poll_interval": float,
    "max_outbox": int,
    "event_batch": int,
    "max_steps": int,
    "health_window_s": float,
    "push_spread_s": float,
    "push_min_gap_s": float,
}
_FLAGS = ("trial_checkin", "mqtt")
_BACKOFF = {"base": float, "factor": float, "cap": float, "jitter": float, "attempts": int}


def config_from_json(value: object) -> AgentConfig:
    """An :class:`AgentConfig` from ``{"chunk_size": ..., "backoff": {"network": {...}}}``.

    Only the fields named are changed; unknown fields and wrong types are refused
    (``ValueError``), so a typo never silently leaves a default in place.
    """
    if not isinstance(value, dict):
        raise ValueError("the agent configuration is a JSON object")
    unknown = set(value) - set(_SCALARS) - set(_FLAGS) - {"backoff"}
    if unknown:
        raise ValueError(f"unknown agent settings: {', '.join(sorted(unknown))}")
    fields: dict[str, object] = {}
    for name, kind in _SCALARS.items():
        if name in value:
            fields[name] = _number(value[name], kind, name)
    for name in _FLAGS:
        if name in value:
            if not isinstance(value[name], bool):
                raise ValueError(f"{name} must be true or false")
            fields[name] = value[name]
    backoff = _default_backoff()
    overrides = value.get("backoff", {})
    if not isinstance(overrides, dict):
        raise ValueError("backoff is a JSON object of failure classes")
    for cls_name, settings in overrides.items():
        try:
            failure = Failure(cls_name)
        except ValueError:
            raise ValueError(f"backoff: unknown failure class {cls_name!r}") from None
        if not failure.transient or not isinstance(settings, dict):
            raise ValueError(f"backoff.{cls_name}: a transient class and an object")
        extra = set(settings) - set(_BACKOFF)
        if extra:
            raise ValueError(f"backoff.{cls_name}: unknown settings {', '.join(sorted(extra))}")
        current = backoff[failure]
        changed = {
            k: _number(v, _BACKOFF[k], f"backoff.{cls_name}.{k}") for k, v in settings.items()
        }
        backoff[failure] = Backoff(**{**current.__dict__, **changed})
    return AgentConfig(**fields, backoff=backoff)  # type: ignore[arg-type]


def _number(value: object, kind: type, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind is int:
        if not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        return value
    return float(value)
