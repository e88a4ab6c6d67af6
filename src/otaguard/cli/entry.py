"""The ``otaguard`` console script: start the payload prefetch, then the CLI.

Kept tiny and free of third-party imports so that the prefetch child is forked
before cryptography is loaded (see ``prefetch``), and so that a plain
``otaguard verify`` never loads click (see ``fastpath``).
"""

from __future__ import annotations

import os
import sys


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, after a fast-path verify only.

    Why: tearing down an interpreter that has loaded cryptography takes ~20 ms here,
    a tenth of a whole 256 MiB verification (bench/RESULTS.md). The fast path opens
    files only in ``with`` blocks, writes nothing but stdout/stderr, starts no thread
    and registers no exit handler, so once its output is flushed nothing is left for
    the teardown to do. Every other command exits normally.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 2
    os._exit(code)


def main() -> None:
    from otaguard.cli import fastpath, verify_args
    from otaguard.image import prefetch

    argv = sys.argv[1:]
    image = verify_args.plain_image(argv)  # a plain verify, or None: everything else is click's
    job = prefetch.start(image)
    try:
        if image is None:
            from otaguard.cli.main import raise_on_sigterm, run_click

            raise_on_sigterm()  # not on the fast path: verify writes nothing to clean up
            code = run_click(argv)
        else:
            code = fastpath.run_plain(argv)
            if job is None or job.done:
                _exit_now(code)
    finally:
        if job is not None:
            job.cancel()
    sys.exit(code)
