"""``otaguard agent provision`` and ``agent run``: exit codes, JSON lines, a SIGKILL mid-fetch."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_one_line
from helpers_fleet import Fleet
from helpers_range import Fault
from otaguard.agent.chunks import HEADER, RECORD

from .conftest import Car, Releases

FAST = {
    "chunk_size": 4096,
    "read_timeout": 5.0,
    "min_rate": 0,
    "backoff": {
        f: {"base": 0.0, "attempts": 3}
        for f in ("network", "server", "slow", "bad-response", "power")
    },
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(FAST))
    return path


def _command(car: Car, config: Path | None, *extra: str, server: str | None = None) -> list[str]:
    """``otaguard agent run --once`` for ``car`` (``config=None``: no --config)."""
    args = [sys.executable, "-m", "otaguard.cli.main", "agent", "run", "--device-dir", str(car.dir)]
    args += ["--server", server or car.fleet.url, "--identity", str(car.identity_dir), "--once"]
    return args + (["--config", str(config)] if config else []) + list(extra)


def _run(
    car: Car, config: Path | None, *extra: str, server: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(car, config, *extra, server=server),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.splitlines()]


def test_provision_through_the_cli(cli, car: Car, fleet: Fleet, tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "repo.json").write_bytes(fleet.repo_root)
    (roots / "director.json").write_bytes(fleet.director_root)
    args = ["--device-dir", car.dir, "--repo-root", roots / "repo.json"]
    ok = cli("agent", "provision", *args, "--director-root", roots / "director.json")
    assert ok.code == 0 and "already provisioned" in ok.out
    other = cli("agent", "provision", *args, "--director-root", roots / "repo.json")
    assert other.code == 2
    assert_one_line(other.err)
    (roots / "bad.json").write_bytes(b"{not json")
    bad = cli(
        "agent",
        "provision",
        *args[:2],
        "--repo-root",
        roots / "bad.json",
        "--director-root",
        roots / "director.json",
    )
    assert bad.code == 1 and "rejected" in bad.err
    none = cli(
        "agent",
        "provision",
        "--device-dir",
        tmp_path / "nothing",
        "--repo-root",
        roots / "repo.json",
        "--director-root",
        roots / "director.json",
    )
    assert none.code == 2


def test_run_once_exit_codes_and_json_lines(
    car: Car, fleet: Fleet, releases: Releases, config_file: Path
) -> None:
    first = _run(car, config_file)
    assert first.returncode == 0, first.stderr
    events = _lines(first.stdout)
    assert {"booted", "enrolled", "cycle"} <= {e["event"] for e in events}
    assert events[-1] == {**events[-1], "event": "cycle", "result": "up-to-date"}
    fleet.assign(car.device_id, releases.v2_name)
    updated = _run(car, config_file)
    assert updated.returncode == 0, updated.stderr
    kinds = [e["kind"] for e in _lines(updated.stdout) if e["event"] == "event"]
    assert kinds == ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]
    fleet.assign(car.device_id, releases.v1_name)  # older: the device refuses it
    refused = _run(car, config_file)
    assert refused.returncode == 1
    assert "refused" in refused.stderr


def test_run_once_exits_2_when_the_server_stays_unreachable(car: Car, config_file: Path) -> None:
    proc = _run(car, config_file, server="http://127.0.0.1:9")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert_one_line(proc.stderr)
    failures = [e for e in _lines(proc.stdout) if e["event"] == "failed"]
    assert [f["attempt"] for f in failures] == [1, 2, 3, 4]  # three retries, then it gives up


def test_usage_errors_exit_2(car: Car, config_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"chunk_sise": 1}))
    for proc in (
        _run(car, bad),
        _run(car, config_file, server="ftp://example"),
        _run(dataclasses.replace(car, identity_dir=tmp_path), None),  # no identity there
    ):
        assert proc.returncode == 2, proc.stderr
        assert_one_line(proc.stderr)


def _journal_records(car: Car) -> int:
    journals = list((car.dir / "agent" / "downloads").glob("*/journal"))
    if not journals:
        return 0
    return (journals[0].stat().st_size - HEADER.size) // RECORD.size


def test_sigkill_mid_download_then_resume(
    car: Car, fleet: Fleet, releases: Releases, config_file: Path
) -> None:
    _run(car, config_file)
    fleet.assign(car.device_id, releases.v2_name)
    info = fleet.target_info(releases.v2_name)
    served = f"/targets/acme-ecu-v2/{info.hashes['sha256']}.2.0.0.img"
    fleet.server.fault(served, Fault(trickle=0.0005))  # ~12 s for the image: time to kill
    proc = subprocess.Popen(
        _command(car, config_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while _journal_records(car) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _journal_records(car)
    assert kept >= 2
    resumed = _run(car, config_file)
    assert resumed.returncode == 0, resumed.stderr
    assert car.running_version() == "2.0.0"
    ranges = [r for r in fleet.server.ranges(served) if r]
    assert ranges[0].startswith("bytes=0-")
    assert int(ranges[-1].split("=")[1].split("-")[0]) >= kept * 4096  # resumed, not restarted


def test_progress_bar_and_json_lines_observers(capsys: pytest.CaptureFixture[str]) -> None:
    from otaguard.cli.agent_cmd import JsonLines, RichProgress

    bar = RichProgress()
    bar.log("event", {"kind": "download-started", "target": "fw/2.img", "detail": ""})
    bar.progress("fw/2.img", 4096, 8192)
    bar.progress("fw/2.img", 8192, 8192)
    bar.log("failed", {"failure": "network", "attempt": 1})
    bar.close()
    err = capsys.readouterr().err
    assert "download-started fw/2.img" in err and "failure=network" in err
    lines = JsonLines()
    lines.log("cycle", {"result": "updated"})
    lines.progress("fw/2.img", 1, 2)  # not an event: no line
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["result"] == "updated"
