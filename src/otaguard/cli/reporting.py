"""Errors become one line on stderr and an exit code: the one mapping for every command.

Exit codes (the same for every sub-command):

* 0 -- success.
* 1 -- refused by a security check (:class:`otaguard.errors.RejectedError`).
* 2 -- usage error, bad configuration, unreadable key, I/O error.
* 3 -- a bug in otaguard (an unexpected exception); reported in one line too.

No click here: ``otaguard verify`` reports through this module without loading it.
"""

from __future__ import annotations

import sys

from otaguard.errors import OtaguardError, RejectedError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    return " ".join(text.split())


def say(line: str) -> None:
    """One line on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line and return its exit code; never a traceback."""
    if isinstance(exc, RejectedError):
        say(f"otaguard: rejected ({exc.check}): {one_line(str(exc))}")
        return EXIT_REJECTED
    if isinstance(exc, OtaguardError):
        say(f"otaguard: error: {one_line(str(exc))}")
        return exc.exit_code
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"otaguard: error: {where}{exc.strerror or exc}")
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        say("otaguard: interrupted")
        return EXIT_INTERRUPTED
    # the last line of defence: never a traceback
    say(
        f"otaguard: internal error (a bug, please report): "
        f"{type(exc).__name__}: {one_line(str(exc))}"
    )
    return EXIT_BUG
