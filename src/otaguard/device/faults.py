"""Power loss, injected deterministically before or during any write operation.

Every operation that changes non-volatile state (sector erase, program, fuse
burn) asks the :class:`OpClock` for permission first and gets a number: 0, 1,
2... in program order. Because the numbering is deterministic, a test can
run an install once to learn how many operations it takes, then replay it
with the power cut before *each* of them, and tear each of them.

Reads are not numbered: a power cut before a read leaves exactly the state
that a cut before the next write leaves, so numbering them would add runs but
no new states.

A *torn* operation is one that power interrupted half-way: a prefix of the
bytes landed; the rest kept its old content or reads back as random bits,
which is what NOR flash does when an erase or program pulse is cut short.
After a tear the power is off, so :class:`PowerLoss` follows it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class TearFill(enum.Enum):
    OLD = "old"  # cells past the torn prefix keep their previous content
    RANDOM = "random"  # cells past the torn prefix read back as noise


class PowerLoss(Exception):
    """The simulated device lost power before or during operation ``op``.

    Not an :class:`~otaguard.errors.OtaguardError`: nothing was refused and
    nothing is wrong with the input; the simulation simply stops here.
    """

    def __init__(self, op: int, torn: bool) -> None:
        how = "during" if torn else "before"
        super().__init__(f"power lost {how} flash operation {op}")
        self.op = op
        self.torn = torn


@dataclass(frozen=True)
class FaultPlan:
    """When to lose power: before operation ``cut_before``, or tearing ``tear_at``."""

    cut_before: int | None = None
    tear_at: int | None = None
    fill: TearFill = TearFill.RANDOM
    seed: int = 0

    def __post_init__(self) -> None:
        for value in (self.cut_before, self.tear_at):
            if value is not None and value < 0:
                raise ValueError("fault positions count from 0")


NO_FAULTS = FaultPlan()


@dataclass(frozen=True)
class Tear:
    """How a torn operation of ``length`` bytes lands: ``prefix`` bytes, then the fill."""

    prefix: int
    fill: TearFill
    rng: random.Random

    def noise(self, n: int) -> bytes:
        return self.rng.randbytes(n)


@dataclass
class OpClock:
    """Numbers write operations and fires the fault plan."""

    plan: FaultPlan = NO_FAULTS
    count: int = 0
    trace: list[str] = field(default_factory=list)
    keep_trace: bool = False

    def tick(self, what: str, length: int) -> Tear | None:
        """Ask to perform one operation of ``length`` bytes.

        Raises :class:`PowerLoss` if the plan cuts power before it; returns a
        :class:`Tear` if this operation is to be torn (the caller applies it,
        then calls :meth:`torn`); returns None to let it complete.
        """
        op = self.count
        if self.plan.cut_before is not None and op >= self.plan.cut_before:
            raise PowerLoss(op, torn=False)
        self.count += 1
        if self.keep_trace:
            self.trace.append(f"{op}: {what}")
        if self.plan.tear_at == op:
            # Not for secrets: a reproducible tear is the point.
            rng = random.Random(self.plan.seed * 1_000_003 + op)  # noqa: S311
            return Tear(rng.randrange(max(length, 1)), self.plan.fill, rng)
        return None

    def torn(self) -> PowerLoss:
        """The exception to raise once a torn operation has been applied."""
        return PowerLoss(self.count - 1, torn=True)
