"""``otaguard._stdio``: ``-`` as stdin and stdout for the library's path-taking functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otaguard._stdio import open_input, write_output
from otaguard.errors import StorageError

PROGRAM = """
import sys
from pathlib import Path
from otaguard._stdio import input_path, output_file
path = input_path("-")
first = open(path, "rb").read()
again = open(path, "rb").read()  # a pipe, spooled once: read twice, whole both times
with output_file("-") as out:
    out.write(first + again)
    if sys.argv[1] == "fail":
        raise SystemExit(3)
"""


def test_stdin_is_spooled_and_stdout_written_only_after_success() -> None:
    ok = subprocess.run(
        [sys.executable, "-c", PROGRAM, "ok"], input=b"abc", capture_output=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"abcabc"
    failed = subprocess.run(
        [sys.executable, "-c", PROGRAM, "fail"], input=b"abc", capture_output=True, check=False
    )
    assert failed.returncode == 3 and failed.stdout == b""  # nothing half-written


def test_a_missing_input_is_one_line_and_a_file_output_is_atomic(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        open_input(str(tmp_path / "missing"))
    write_output(str(tmp_path / "out.pem"), b"text")
    assert (tmp_path / "out.pem").read_bytes() == b"text"
