"""``otaguard verify`` without click, when its command line is plain.

Why: importing click is ~25 ms of a ~130 ms verification of a 16 MiB MCUboot image,
and the issue's goal compares whole processes (bench/RESULTS.md). Only the parsing
differs from the click command: :func:`otaguard.cli.verify_args.parse` hands anything
unusual to click, and both run :func:`otaguard.cli.verifying.verify` and report errors
through :mod:`otaguard.cli.reporting`.
"""

from __future__ import annotations

import sys

from otaguard.cli import verify_args

TYPE_CHECKING = False  # typing costs ~8 ms to import: keep it off the start-up path
if TYPE_CHECKING:
    from typing import Any


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(argv: list[str]) -> int | None:
    """The exit code of ``otaguard verify ...``, or ``None`` if click must handle ``argv``."""
    opts = verify_args.parse(argv)
    return None if opts is None else run_parsed(opts)


def run_parsed(opts: dict[str, Any]) -> int:
    """``otaguard verify`` with the options :func:`verify_args.parse` returned."""
    from otaguard.cli import reporting

    try:
        from otaguard.cli import verifying

        verifying.verify(opts, _echo)
    except (Exception, KeyboardInterrupt) as exc:
        return reporting.report(exc)
    return reporting.EXIT_OK
