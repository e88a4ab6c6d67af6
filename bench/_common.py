"""What every bench module shares: quick mode, running commands, failing with a partial section.

Not a bench (run.py discovers ``bench_*.py`` only). Importable as ``_common`` because run.py
runs with this directory first on sys.path.
"""

from __future__ import annotations

import os
import subprocess


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
