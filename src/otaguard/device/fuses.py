"""One-time-programmable memory: trust anchors and anti-rollback counters.

OTP bits go one way only: a burned fuse is never unburned, by anyone. That is
what makes the security counter an anti-rollback floor that neither an
attacker with flash access nor a buggy update can lower.

* Trust anchors: SHA-256 hashes of the manufacturer's root public keys (SPKI
  DER), burned at manufacture. The keys themselves live in ordinary storage
  and are only believed if they hash to an anchor. Several anchors may be
  provisioned so that a root can be rotated without a new OTP.
* Security counters, one per firmware component, behind one interface:

  - :class:`ThermometerCounters` -- the value is the number of burned fuses
    out of a fixed budget (e.g. 64). Burning is one counted operation per
    fuse, so a raise from 7 to 9 is two operations, each of which can be cut.
    The budget is finite: an image whose counter exceeds it can never be
    confirmed, so install refuses it before writing anything.
  - :class:`MonotonicCounters` -- a counter in a replay-protected store such
    as eMMC RPMB: one authenticated write sets it, the store refuses to go
    down, and the budget is the counter's range (2^32 - 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from otaguard.device.faults import OpClock
from otaguard.errors import UsageError

MAX_ANCHORS = 4
RPMB_MAX = 0xFFFFFFFF


class CounterStore(Protocol):
    """A set of named, monotonic, bounded counters."""

    kind: str
    clock: OpClock

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every change (to persist the store)."""
        ...

    def names(self) -> set[str]: ...

    def value(self, name: str) -> int: ...

    def capacity(self, name: str) -> int: ...

    def advance_to(self, name: str, target: int) -> None:
        """Raise ``name`` to ``target`` (no-op if already there); counted operations."""
        ...

    def to_json(self) -> dict[str, object]: ...


def _noop() -> None:
    """Default change hook: an in-memory store persists nothing."""


def _names(data: object, what: str) -> dict[str, object]:
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UsageError(f"OTP: bad {what}")
    return data


@dataclass
class ThermometerCounters:
    """Each counter is a row of fuses; its value is how many are burned."""

    fuses: dict[str, bytearray]
    clock: OpClock = field(default_factory=OpClock)
    on_change: Callable[[], None] = field(default=_noop)
    kind: str = "fuses"

    def watch(self, callback: Callable[[], None]) -> None:
        self.on_change = callback

    @classmethod
    def fresh(cls, names: tuple[str, ...], bits: int) -> ThermometerCounters:
        if not 1 <= bits <= 4096:
            raise UsageError("the fuse budget must be between 1 and 4096 bits")
        return cls({n: bytearray(bits) for n in names})

    def names(self) -> set[str]:
        return set(self.fuses)

    def value(self, name: str) -> int:
        return sum(self.fuses[name])

    def capacity(self, name: str) -> int:
        return len(self.fuses[name])

    def advance_to(self, name: str, target: int) -> None:
        row = self.fuses[name]
        if target > len(row):
            raise ValueError(f"counter {name} cannot reach {target}: {len(row)} fuses")
        for index in range(len(row)):
            if sum(row) >= target:
                return
            if row[index]:
                continue
            tear = self.clock.tick(f"burn fuse {name}[{index}]", 1)
            if tear is None or tear.rng.random() < 0.5:  # a cut-short burn may or may not take
                row[index] = 1
                self.on_change()
            if tear is not None:
                raise self.clock.torn()

    def to_json(self) -> dict[str, object]:
        rows = {n: "".join("1" if b else "0" for b in row) for n, row in self.fuses.items()}
        return {"kind": self.kind, "fuses": rows}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ThermometerCounters:
        rows = _names(data.get("fuses"), "fuse rows")
        fuses: dict[str, bytearray] = {}
        for name, row in rows.items():
            if not isinstance(row, str) or not row or set(row) - {"0", "1"}:
                raise UsageError(f"OTP: bad fuse row {name}")
            fuses[name] = bytearray(int(c) for c in row)
        return cls(fuses)


@dataclass
class MonotonicCounters:
    """RPMB-like counters: one atomic, authenticated write per raise."""

    values: dict[str, int]
    limit: int = RPMB_MAX
    clock: OpClock = field(default_factory=OpClock)
    on_change: Callable[[], None] = field(default=_noop)
    kind: str = "rpmb"

    def watch(self, callback: Callable[[], None]) -> None:
        self.on_change = callback

    @classmethod
    def fresh(cls, names: tuple[str, ...], limit: int = RPMB_MAX) -> MonotonicCounters:
        return cls(dict.fromkeys(names, 0), limit)

    def names(self) -> set[str]:
        return set(self.values)

    def value(self, name: str) -> int:
        return self.values[name]

    def capacity(self, name: str) -> int:
        return self.limit

    def advance_to(self, name: str, target: int) -> None:
        if target > self.limit:
            raise ValueError(f"counter {name} cannot reach {target}")
        if target <= self.values[name]:
            return
        tear = self.clock.tick(f"rpmb write {name}={target}", 1)
        if tear is None or tear.rng.random() < 0.5:  # an RPMB write lands whole or not at all
            self.values[name] = target
            self.on_change()
        if tear is not None:
            raise self.clock.torn()

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "values": dict(self.values), "limit": self.limit}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MonotonicCounters:
        values = _names(data.get("values"), "counter values")
        limit = data.get("limit", RPMB_MAX)
        if not isinstance(limit, int) or not all(
            isinstance(v, int) and 0 <= v <= limit for v in values.values()
        ):
            raise UsageError("OTP: bad monotonic counter values")
        return cls({k: int(v) for k, v in values.items()}, limit)  # type: ignore[call-overload]


@dataclass
class Otp:
    """What was burned at manufacture (anchors) and since (counters, rotated anchors).

    Each anchor carries the key epoch it was burned for; the key epoch itself
    only moves forward (a one-way fuse field). Anchors of an epoch below the
    current one are dead: a stolen old root key cannot sign its way back in.
    """

    anchors: tuple[bytes, ...]
    counters: CounterStore
    epochs: tuple[int, ...] = ()
    key_epoch: int = 1

    def __post_init__(self) -> None:
        if not 1 <= len(self.anchors) <= MAX_ANCHORS:
            raise UsageError(f"provision 1 to {MAX_ANCHORS} trust anchors")
        if any(len(a) != 32 for a in self.anchors):
            raise UsageError("a trust anchor is a 32-byte SHA-256 hash")
        if not self.epochs:
            self.epochs = (1,) * len(self.anchors)
        if len(self.epochs) != len(self.anchors) or self.key_epoch < 1:
            raise UsageError("OTP: anchor epochs do not match the anchors")

    def live_anchors(self) -> frozenset[bytes]:
        """Anchors of the current key epoch or later: the only ones that count."""
        return frozenset(
            a for a, e in zip(self.anchors, self.epochs, strict=True) if e >= self.key_epoch
        )

    def burn_anchor(self, key_hash: bytes, epoch: int) -> None:
        """Burn a rotated-in anchor into a free slot and move the key epoch forward."""
        from otaguard.errors import AnchorRotationError

        if epoch <= self.key_epoch:
            raise AnchorRotationError(f"key epoch {epoch} is not above {self.key_epoch}")
        if len(self.anchors) >= MAX_ANCHORS:
            raise AnchorRotationError(f"all {MAX_ANCHORS} OTP anchor slots are burned")
        self.anchors = (*self.anchors, key_hash)
        self.epochs = (*self.epochs, epoch)
        self.key_epoch = epoch

    def to_json(self) -> dict[str, object]:
        return {
            "anchors": [a.hex() for a in self.anchors],
            "epochs": list(self.epochs),
            "key_epoch": self.key_epoch,
            "counters": self.counters.to_json(),
        }

    @classmethod
    def from_json(cls, data: object) -> Otp:
        if not isinstance(data, dict):
            raise UsageError("OTP: not an object")
        anchors = data.get("anchors")
        counters = data.get("counters")
        if not isinstance(anchors, list) or not isinstance(counters, dict):
            raise UsageError("OTP: missing anchors or counters")
        try:
            hashes = tuple(bytes.fromhex(a) for a in anchors)
        except (TypeError, ValueError):
            raise UsageError("OTP: bad anchor") from None
        epochs = data.get("epochs", [1] * len(hashes))
        key_epoch = data.get("key_epoch", 1)
        if not isinstance(epochs, list) or not all(isinstance(e, int) for e in epochs):
            raise UsageError("OTP: bad anchor epochs")
        if not isinstance(key_epoch, int):
            raise UsageError("OTP: bad key epoch")
        store: CounterStore
        if counters.get("kind") == "fuses":
            store = ThermometerCounters.from_json(counters)
        elif counters.get("kind") == "rpmb":
            store = MonotonicCounters.from_json(counters)
        else:
            raise UsageError("OTP: unknown counter kind")
        return cls(hashes, store, tuple(epochs), key_epoch)
