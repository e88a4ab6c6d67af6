"""What every bench module shares: quick mode, running commands, failing with a partial section.

Not a bench (run.py discovers ``bench_*.py`` only). Importable as ``_common`` because run.py
runs with this directory first on sys.path.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def quick() -> bool:
    """Quick mode (set by run.py): smaller inputs, same code paths."""
    return os.environ.get("OTAGUARD_BENCH_QUICK") == "1"


class CommandFailed(Exception):
    """A command exited other than expected; the message is its last output line."""


class BenchFailed(Exception):
    """Raised at the end when a part failed; `section` keeps what the other parts measured."""

    def __init__(self, message: str, section: str) -> None:
        super().__init__(message)
        self.section = section


def last_line(text: str) -> str:
    """Last non-empty line: otaguard prints one error line, tools with tracebacks end in one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def check(
    argv: list[str], *, expect: int = 0, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run a command; raise with its one-line error unless it exits `expect`."""
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != expect:
        raise CommandFailed(
            f"`{' '.join(argv[:3])} ...` exited {proc.returncode}, expected {expect}: "
            f"{last_line(proc.stderr or proc.stdout)}"
        )
    return proc


#: Whole-process timings: rounds per measurement, after one warm-up run of each command.
RUNS = 15


@dataclass
class Timing:
    """Median and spread of repeated whole-process runs."""

    median: float
    low: float
    high: float

    def cell(self) -> str:
        """Markdown cell: median with min-max, so noisy runs are visible."""
        return f"{self.median:.3f} ({self.low:.3f}-{self.high:.3f})"


def wall(argv: list[str], timeout: float = 1800) -> float:
    """Wall time of one whole process; raise if it fails (a failing run is no measurement)."""
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(argv[:2])}` exited {proc.returncode}: {last_line(proc.stderr)}"
        )
    return elapsed


def interleaved(*argvs: list[str], runs: int = RUNS) -> list[Timing]:
    """Time commands in alternation: round r runs each once, in turn.

    Why: this is a shared 2-core VM whose speed drifts by tens of percent over seconds.
    Timing one command's runs and then the other's lets a slow spell land on one side
    of a ratio; alternating spreads it over both, and the median drops the outliers.
    """
    for argv in argvs:
        wall(argv)  # warm-up: page cache, .pyc files, CPU frequency
    samples: list[list[float]] = [[] for _ in argvs]
    for _ in range(runs):
        for argv, mine in zip(argvs, samples, strict=True):
            mine.append(wall(argv))
    return [Timing(statistics.median(s), min(s), max(s)) for s in samples]


def flip_byte(path: Path, offset: int) -> None:
    """XOR one byte in place (calling it twice restores the file)."""
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))
