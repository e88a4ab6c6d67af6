"""Helpers shared by the sub-commands: key files, passphrases, and where a command reads and writes.

Paths on the command line follow one set of rules, kept in :mod:`otaguard._stdio` and
:mod:`otaguard._atomic`:

* ``-`` is stdin as an input (:func:`input_path`) and stdout as an output
  (:func:`output_file`), for the commands that say so in their help.
* An output is written atomically, only if the command succeeds, never over a
  non-regular file or one of the command's inputs (``_atomic.check_output``).

Imports stay light (no cryptography, no tempfile at import time): ``otaguard.cli.verifying``
uses this module on the path of ``otaguard verify``, which counts its start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

# ``-`` as stdin and stdout is the library's rule (otaguard._stdio); the commands import it here.
from otaguard._stdio import STDIO, input_path, output_file, to_stdout
from otaguard.errors import UsageError

if TYPE_CHECKING:
    from otaguard._atomic import InputPath

__all__ = ["STDIO", "input_path", "output_file", "to_stdout"]


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


def one_stdout(as_json: bool, out: str, flag: str) -> bool:
    """Whether ``out`` is stdout; refused with ``--json``, which wants stdout too."""
    if as_json and to_stdout(out):
        raise UsageError(f"--json and {flag} both want stdout: give one")
    return to_stdout(out)


def ensure_distinct(paths: list[str], output: str | None = None) -> None:
    """Refuse a file given twice, among the inputs or as an input and the ``output``.

    ``-`` as the output is stdout, which no input can be (an input ``-`` is stdin).
    """
    named = [*paths, *([output] if output is not None and not to_stdout(output) else [])]
    resolved = [os.path.realpath(p) for p in named]
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
