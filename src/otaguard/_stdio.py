"""``-`` as a path: stdin as an input, stdout as an output, for every command that takes files.

Why one module below the CLI: the rule is the library's, not one command's. Every
reader opens its input by name (some more than once: format detection, then
verification) and every writer promises that nothing is written unless it succeeded
(:mod:`otaguard._atomic`); ``-`` keeps both promises here, so the library functions that
take a path (``pki.ca``, ``delta.files``) accept ``-`` as the CLI does.

Imports stay light (no tempfile at import time): ``otaguard verify`` reads its image
through :func:`input_path` and counts its start-up.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from otaguard.errors import StorageError, UsageError

if TYPE_CHECKING:
    from otaguard._atomic import InputPath

#: The path that means stdin (as an input) or stdout (as an output).
STDIO = "-"
#: What ``-`` becomes as an input: a path every reader can open, any number of times.
STDIN_PATH = "/dev/stdin"


def input_path(path: str) -> str:
    """``path``, or for ``-`` a path to stdin's bytes that can be opened, sought and re-read.

    Why a path and not a stream: the readers open their input by name, some more than
    once (format detection, then verification) and seek in it. A pipe on stdin is
    copied once into an unlinked temporary file that then becomes fd 0, so
    ``/dev/stdin`` opens it as a regular file with its own offset each time (Linux).
    """
    if path != STDIO:
        return path
    try:
        st = os.fstat(0)
        if not stat.S_ISREG(st.st_mode) or os.lseek(0, 0, os.SEEK_CUR) != 0:
            _spool_stdin()
    except OSError as exc:
        raise StorageError(f"cannot read stdin: {exc.strerror or exc}") from exc
    return STDIN_PATH


def open_input(path: str) -> BinaryIO:
    """``path`` (stdin for ``-``) opened for reading; a failure is a one-line refusal."""
    try:
        return open(input_path(path), "rb")
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _spool_stdin() -> None:
    import shutil
    import tempfile

    with tempfile.TemporaryFile() as copy:
        with os.fdopen(os.dup(0), "rb") as stdin:
            shutil.copyfileobj(stdin, copy, 1 << 20)
        copy.flush()
        os.dup2(copy.fileno(), 0)  # fd 0 keeps the (unlinked) copy open
    os.lseek(0, 0, os.SEEK_SET)


def to_stdout(path: str) -> bool:
    """Whether ``path`` is stdout: the command's messages then go to stderr."""
    return path == STDIO


@contextlib.contextmanager
def output_file(
    path: str,
    *,
    inputs: Iterable[InputPath] = (),
    mode: int = 0o644,
    overwrite: bool = True,
    binary: bool = True,
) -> Iterator[BinaryIO]:
    """Where a command writes OUTPUT: the file, atomically, or stdout for ``-``.

    Either way nothing is written unless the block succeeds: for stdout the bytes
    are collected in an unlinked temporary file and copied out at the end, so a
    payload refused half-way is never piped into the next program. ``binary``
    output is refused on a terminal (text, such as PEM, is not).
    """
    import shutil
    import tempfile

    if path != STDIO:
        from otaguard._atomic import atomic_output

        with atomic_output(path, inputs=inputs, mode=mode, overwrite=overwrite) as handle:
            yield handle
        return
    if binary and sys.stdout.isatty():
        raise UsageError("refusing to write binary output to a terminal: redirect it")
    with tempfile.TemporaryFile() as spool:
        yield spool
        spool.seek(0)
        try:
            sys.stdout.flush()
            shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise StorageError(f"cannot write stdout: {exc.strerror or exc}") from exc


def write_output(
    path: str,
    data: bytes,
    *,
    inputs: Iterable[InputPath] = (),
    mode: int = 0o644,
    binary: bool = False,
) -> None:
    """Write ``data`` (text such as PEM unless ``binary``) to ``path``, or stdout for ``-``."""
    with output_file(path, inputs=inputs, mode=mode, binary=binary) as handle:
        handle.write(data)
