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
    from otaguard.cli.verifying import VerifyArgs


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(argv: list[str]) -> int | None:
    """The exit code of ``otaguard verify ...``, or ``None`` if click must handle ``argv``."""
    args = verify_args.parse(argv)
    return None if args is None else run_parsed(args)


def run_plain(argv: list[str]) -> int:
    """``otaguard verify ...`` of a line :func:`verify_args.plain_image` accepted."""
    args = verify_args.parse(argv)
    if args is None:  # pragma: no cover - plain_image and parse read argv alike
        raise AssertionError("not a plain verify command line")
    return run_parsed(args)


def run_parsed(args: VerifyArgs) -> int:
    """``otaguard verify`` with the options :func:`verify_args.parse` returned."""
    from otaguard.cli import reporting

    try:
        from otaguard.cli import verifying

        verifying.verify(args, _echo)
    except (Exception, KeyboardInterrupt) as exc:
        return reporting.report(exc)
    return reporting.EXIT_OK
