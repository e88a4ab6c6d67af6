"""Helpers shared by the sub-commands: key files, passphrases, and where a command reads and writes.

Paths on the command line follow one set of rules, kept here and in :mod:`otaguard._atomic`:

* ``-`` is stdin as an input (:func:`input_path`) and stdout as an output
  (:func:`output_file`), for the commands that say so in their help.
* An output is written atomically, only if the command succeeds, never over a
  non-regular file or one of the command's inputs (``_atomic.check_output``).

Imports stay light (no cryptography, no tempfile at import time): ``otaguard.cli.verifying``
uses this module on the path of ``otaguard verify``, which counts its start-up.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from otaguard.errors import KeyLoadError, StorageError, UsageError

if TYPE_CHECKING:
    from otaguard._atomic import InputPath
    from otaguard.crypto.keys import PrivateKey, PublicKey

#: The path that means stdin (as an input) or stdout (as an output).
STDIO = "-"
#: What ``-`` becomes as an input: a path every reader can open, any number of times.
STDIN_PATH = "/dev/stdin"


def passphrase_from_env(var: str | None) -> bytes | None:
    """The passphrase named by ``--passphrase-env``; never taken from argv (ps shows argv)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise UsageError(f"environment variable {var} (--passphrase-env) is not set")
    if not value:
        raise UsageError(f"environment variable {var} (--passphrase-env) is empty")
    return value.encode()


def load_private_key_file(path: str, passphrase: bytes | None) -> PrivateKey:
    from otaguard.crypto.keys import load_private_key
    from otaguard.crypto.loader import read_key_file

    data = read_key_file(path)
    try:
        return load_private_key(data, passphrase)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def load_public_key_file(path: str) -> PublicKey:
    from otaguard.crypto.keys import load_public_key
    from otaguard.crypto.loader import read_key_file

    data = read_key_file(path)
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def ensure_distinct(paths: list[str]) -> None:
    resolved = [os.path.realpath(p) for p in paths]
    if len(set(resolved)) != len(resolved):
        raise UsageError("the same file was given twice")


#: The options of ``sign`` (both formats) and of ``verify``/``extract`` that name files
#: the command reads: its output may be none of them.
SIGN_INPUTS = ("input_path", "keys", "cert_chain")
VERIFY_INPUTS = ("image", "trusted_keys", "trusted_roots", "crls")


def inputs_of(opts: Mapping[str, Any], *names: str) -> list[InputPath]:
    """The files named by options ``names`` (one path, None, or a tuple of paths each).

    What a command passes as ``inputs=`` to :func:`output_file`: its output may be none
    of them.
    """
    found: list[InputPath] = []
    for name in names:
        value = opts[name]
        found.extend(value if isinstance(value, (tuple, list)) else [value])
    return found


# --- stdin and stdout -------------------------------------------------------------------


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
) -> Iterator[BinaryIO]:
    """Where a command writes OUTPUT: the file, atomically, or stdout for ``-``.

    Either way nothing is written unless the block succeeds: for stdout the bytes
    are collected in an unlinked temporary file and copied out at the end, so a
    payload refused half-way is never piped into the next program.
    """
    import shutil
    import tempfile

    if path != STDIO:
        from otaguard._atomic import atomic_output

        with atomic_output(path, inputs=inputs, mode=mode, overwrite=overwrite) as handle:
            yield handle
        return
    if sys.stdout.isatty():
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
