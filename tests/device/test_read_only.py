"""``device status`` only reads, so it works on a read-only device directory.

Two honest ways to make a directory read-only, because the tests may run as
root (where ``chmod`` stops nothing): as root, a read-only bind mount in a
private mount namespace (``unshare``), which refuses writes to everyone with
EROFS; as another user, ``chmod -w``. Either way the command runs in a
subprocess against a directory the kernel will not let it write. The library
test then checks the stronger property directly: opening read-only writes
nothing, creates nothing, and a write through it is a bug that raises.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otaguard.device.model import MAIN
from otaguard.device.status import device_status
from otaguard.device.store import load_running, open_device

from .conftest import init_device_dir

STATUS = [sys.executable, "-m", "otaguard.cli.main", "device", "status"]


def _device(cli, tmp_path: Path, files: dict[str, Path]) -> Path:
    dev = init_device_dir(cli, tmp_path / "dev", files)
    for step in (("install", files["v1"]), ("boot",)):  # running.json exists: a trial runs
        assert cli("device", step[0], dev, *step[1:]).code == 0
    return dev


def _tree(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``path``: size, mtime and content hash."""
    out = {}
    for file in sorted(path.rglob("*")):
        st = file.stat()
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "dir"
        out[str(file.relative_to(path))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _run_read_only(dev: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(dev)], check=True)
        try:
            return subprocess.run(
                [*STATUS, str(dev), *args], capture_output=True, text=True, env=env, check=False
            )
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(dev)], check=True)
    mount = dev.parent / "ro"
    mount.mkdir(exist_ok=True)
    script = (
        'mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" && '
        '! touch "$2/probe" 2>/dev/null && shift 2 && exec "$@"'
    )
    cmd = [*STATUS, str(mount), *args]
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) makes the read-only mount"
    return subprocess.run(
        [unshare, "--mount", "sh", "-c", script, "sh", str(dev), str(mount), *cmd],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_status_on_a_read_only_device_directory(cli, tmp_path: Path, files) -> None:
    dev = _device(cli, tmp_path, files)
    expected = cli("device", "status", dev, "--json").out
    before = _tree(dev)
    result = _run_read_only(dev, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    text = _run_read_only(dev)
    assert text.returncode == 0 and text.stdout.startswith("update state TRIAL"), text.stderr
    assert _tree(dev) == before


def test_opening_read_only_writes_nothing_and_refuses_writes(cli, tmp_path: Path, files) -> None:
    dev = _device(cli, tmp_path, files)
    before = _tree(dev)
    running = load_running(dev)
    with open_device(dev, writable=False) as device:
        status = device_status(device, running)
        assert status.fwu_state.value == "TRIAL"
        with pytest.raises(TypeError):  # the flash is mapped read-only
            device.flash.erase_sector(0)
        with pytest.raises(RuntimeError, match="read-only"):  # OTP is never persisted
            device.otp.counters.advance_to(MAIN, 1)
    assert _tree(dev) == before  # not a byte, not a temp file, not a lock file
