"""Interrupted runs: SIGTERM cleans up like Ctrl-C; what SIGKILL leaves, the next run removes.

Found by hand (issue 13): SIGTERM or SIGKILL during ``sign``, ``delta create`` or ``delta
apply`` left hidden temporary files as large as the output, never removed, and Ctrl-C in
``delta create`` ended in "internal error: BufferError". Each test runs the real
``otaguard`` in a subprocess and signals it while it is provably mid-write, with no
timing guess: ``sign`` reads its payload from a FIFO the test feeds and then holds open;
the delta commands run under a hook that stalls the first write to their output
(:data:`STALLING`), since their inputs must be seekable files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import CliResult, assert_one_line, cached_key, make_image
from otaguard.crypto.keys import KeyType, private_key_pem, public_key_pem

Cli = Callable[..., CliResult]
OTAGUARD = [sys.executable, "-c", "from otaguard.cli.entry import main; main()"]
#: The real entry point, with the first write to an atomic output stalled for good
#: (until a signal): a writer caught mid-output, deterministically.
STALLING = """
import contextlib, time
import otaguard._atomic as atomic

real = atomic.atomic_output

class Stalling:
    def __init__(self, handle):
        self._handle = handle
    def write(self, data):
        self._handle.write(data)
        self._handle.flush()
        while True:
            time.sleep(3600)
    def __getattr__(self, name):
        return getattr(self._handle, name)

@contextlib.contextmanager
def stalling(*args, **kwargs):
    with real(*args, **kwargs) as handle:
        yield Stalling(handle)

atomic.atomic_output = stalling
from otaguard.cli.entry import main
main()
"""
SIGN = ["--version", "1.0.0", "--security-counter", "1", "--hardware-id", "hw"]
#: Longest wait for a subprocess to reach the state a test needs (never a timing assertion).
PATIENCE = 120.0


@pytest.fixture
def world(tmp_path: Path, cli: Cli) -> dict[str, Path]:
    key = cached_key(KeyType.ED25519, 60)
    files = {"key": tmp_path / "key.pem", "pub": tmp_path / "key.pub"}
    files["key"].write_bytes(private_key_pem(key, None))
    files["pub"].write_bytes(public_key_pem(key.public_key()))
    payload = os.urandom(256 << 10)
    edited = payload[:1000] + b"a new function" + payload[1000:]
    for name, body, version in (("old", payload, "1.0.0"), ("new", edited, "1.1.0")):
        files[name] = tmp_path / f"{name}.img"
        files[name].write_bytes(make_image(body, [key], version=version, security_counter=1))
    files["delta"] = tmp_path / "old-new.delta"
    made = cli("delta", "create", "--key", files["key"], files["old"], files["new"], files["delta"])
    assert made.code == 0, made.err
    files["out"] = tmp_path / "out"
    files["out"].mkdir()
    return files


def _temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".tmp"))


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not ready():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"otaguard ended ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"otaguard never got to {what}")
        time.sleep(0.02)


def _mid_write(directory: Path, proc: subprocess.Popen[bytes]) -> Path:
    """The temporary output of ``proc``, once it holds bytes."""
    _wait_until(lambda: any(p.stat().st_size for p in _temps(directory)), proc, "writing")
    (temp,) = _temps(directory)
    return temp


class Feeder:
    """``otaguard sign FIFO OUT`` with the test writing the FIFO: stuck mid-write at will."""

    def __init__(self, world: dict[str, Path], out: Path) -> None:
        fifo = out.parent.parent / f"{out.name}.fifo"
        os.mkfifo(fifo)
        self.out = out
        self.proc = subprocess.Popen(
            [*OTAGUARD, "sign", "--key", str(world["key"]), *SIGN, str(fifo), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.fd = -1
        self.sent = b""

        def opened() -> bool:  # the FIFO opens for writing once otaguard opened it to read
            try:
                self.fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return False
            return True

        _wait_until(opened, self.proc, "opening its input")
        os.set_blocking(self.fd, True)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)  # returns once otaguard has read all of it (a FIFO)
        self.sent += data

    def finish(self) -> subprocess.CompletedProcess[bytes]:
        os.close(self.fd)
        self.fd = -1
        out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@contextlib.contextmanager
def feeding(world: dict[str, Path], out: Path) -> Iterator[Feeder]:
    feeder = Feeder(world, out)
    try:
        yield feeder
    finally:
        feeder.close()


def _run(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*OTAGUARD, *map(str, args)], capture_output=True, check=False)


def _one_line(err: bytes) -> str:
    text = err.decode()
    assert_one_line(text)
    return text


# --- sign ---------------------------------------------------------------------------------


SIGNALS = pytest.mark.parametrize(
    ("sig", "code", "line"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["sigterm", "sigint"],
)


@SIGNALS
def test_a_signal_mid_sign_removes_the_temp_file(
    world: dict[str, Path], sig: signal.Signals, code: int, line: str
) -> None:
    out = world["out"] / "fw.img"
    with feeding(world, out) as feeder:
        feeder.send(os.urandom(1 << 20))
        _mid_write(world["out"], feeder.proc)
        feeder.proc.send_signal(sig)
        _, err = feeder.proc.communicate()
        assert feeder.proc.returncode == code, err
        assert _one_line(err) == f"otaguard: {line}\n"
    assert os.listdir(world["out"]) == []


def test_what_sigkill_mid_sign_leaves_the_next_run_removes(world: dict[str, Path]) -> None:
    out = world["out"] / "fw.img"
    with feeding(world, out) as feeder:
        feeder.send(os.urandom(2 << 20))
        temp = _mid_write(world["out"], feeder.proc)
        feeder.proc.send_signal(signal.SIGKILL)
        feeder.proc.wait()
    assert temp.exists() and temp.stat().st_size >= 1 << 20  # as large as the output so far
    assert not out.exists()
    # any later otaguard write in that directory, here another command
    result = _run("key", "public", world["key"], "--out", world["out"] / "key.pub")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(world["out"])) == ["key.pub"]


def test_a_live_writers_temp_file_is_not_swept(world: dict[str, Path]) -> None:
    out = world["out"] / "fw.img"
    with feeding(world, out) as feeder:
        feeder.send(os.urandom(1 << 20))
        temp = _mid_write(world["out"], feeder.proc)
        other = _run("sign", "--key", world["key"], *SIGN, world["key"], world["out"] / "b.img")
        assert other.returncode == 0, other.stderr  # a whole run in the same directory
        assert temp.exists()
        feeder.send(b"the rest of the payload")
        done = feeder.finish()
        assert done.returncode == 0, done.stderr
        payload = feeder.sent
    assert sorted(os.listdir(world["out"])) == ["b.img", "fw.img"]
    extracted = world["out"].parent / "payload"
    result = _run("extract", "--trusted-key", world["pub"], out, extracted)
    assert result.returncode == 0, result.stderr
    assert extracted.read_bytes() == payload


# --- delta create and apply -----------------------------------------------------------------


def _delta_command(world: dict[str, Path], command: str, out: Path) -> list[str]:
    if command == "create":
        args = ["--key", world["key"], world["old"], world["new"], out]
    else:
        args = ["--trusted-key", world["pub"], world["old"], world["delta"], out]
    return [sys.executable, "-c", STALLING, "delta", command, *map(str, args)]


@pytest.mark.parametrize("command", ["create", "apply"])
@SIGNALS
def test_a_signal_mid_delta_removes_the_temp_file(
    world: dict[str, Path], command: str, sig: signal.Signals, code: int, line: str
) -> None:
    out = world["out"] / "result"
    argv = _delta_command(world, command, out)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _mid_write(world["out"], proc)
        proc.send_signal(sig)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert _one_line(err) == f"otaguard: {line}\n"  # never "internal error: BufferError"
    assert os.listdir(world["out"]) == []


@pytest.mark.parametrize("command", ["create", "apply"])
def test_what_sigkill_mid_delta_leaves_the_next_run_removes(
    world: dict[str, Path], command: str
) -> None:
    out = world["out"] / "result"
    proc = subprocess.Popen(_delta_command(world, command, out), stderr=subprocess.PIPE)
    try:
        temp = _mid_write(world["out"], proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert temp.exists() and not out.exists()
    rerun = _run("delta", command, *_delta_command(world, command, out)[5:])
    assert rerun.returncode == 0, rerun.stderr
    assert os.listdir(world["out"]) == ["result"]
