"""Errors become one line on stderr and an exit code: the one mapping for every command.

Exit codes (the same for every sub-command):

* 0 -- success.
* 1 -- refused by a security check (:class:`otaguard.errors.RejectedError`).
* 2 -- usage error, bad configuration, unreadable key, I/O error.
* 3 -- a bug in otaguard (an unexpected exception); reported in one line too.
* 130 -- interrupted (Ctrl-C, SIGINT); 143 -- terminated (SIGTERM). Both run the same
  cleanup (an unfinished output's temporary file is removed); the codes are the
  shell's 128 + signal number, so a supervisor can tell the two apart.

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
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (see ``otaguard.cli.main.raise_on_sigterm``).

    A KeyboardInterrupt, so that everything that cleans up after Ctrl-C (the atomic
    writer's ``except BaseException``) cleans up after SIGTERM too.
    """


def one_line(text: str) -> str:
    return " ".join(text.split())


def say(line: str) -> None:
    """One line on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt ``exc`` was raised while handling, if any.

    Why: an interrupt can break a clean-up on its way out (closing a memory map that
    a buffer still uses raises BufferError), and that error would replace it. The
    user interrupted the command; that is what they must be told, not a bug.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return None


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line and return its exit code; never a traceback."""
    interrupt = _interruption(exc)
    if interrupt is not None:
        exc = interrupt
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
    if isinstance(exc, Terminated):
        say("otaguard: terminated")
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        say("otaguard: interrupted")
        return EXIT_INTERRUPTED
    # the last line of defence: never a traceback
    say(
        f"otaguard: internal error (a bug, please report): "
        f"{type(exc).__name__}: {one_line(str(exc))}"
    )
    return EXIT_BUG
