"""The ``otaguard`` console script: start the payload prefetch, then the CLI.

Kept tiny and free of third-party imports so that the prefetch child is
forked before click and cryptography are loaded (see ``prefetch``).
"""

from __future__ import annotations

import sys


def main() -> None:
    from otaguard.cli import prefetch

    job = prefetch.start(sys.argv[1:])
    try:
        from otaguard.cli.main import run

        code = run(sys.argv[1:])
    finally:
        if job is not None:
            job.cancel()
    sys.exit(code)
