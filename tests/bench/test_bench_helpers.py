"""The plumbing of bench/bench_server.py and bench/run.py (the benches themselves run in
``make bench``): pre-signed requests the server would accept, wrk's result line, CPU
accounting, profile summaries, and keeping RESULTS.md's other sections."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import RejectedError
from otaguard.protocol.signing import verify_request

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


load = _load("server_load")
runner = _load("run")

STATE = "ab" * 32
ETAG = '"' + "cd" * 16 + '"'


def _headers(raw: bytes) -> tuple[str, dict[str, str]]:
    head, *lines = raw.decode("ascii").removesuffix("\r\n\r\n").split("\r\n")
    return head, dict(line.split(": ", 1) for line in lines)


def test_presigned_check_ins_verify_with_each_devices_key_and_are_distinct() -> None:
    signers = [KeySigner(generate_private_key(KeyType.ECDSA_P256)) for _ in range(2)]
    devices = [(f"WBA{i:014d}", signers[i % 2]) for i in range(5)]
    data = load.presign(load.IdleCheckIn(STATE, ETAG), devices, now=1_000_000)
    requests = load.split_requests(data)
    assert len(requests) == 5
    nonces = set()
    for (device, signer), raw in zip(devices, requests, strict=True):
        line, headers = _headers(raw)
        assert line == f"GET /api/v1/device/update?state={STATE} HTTP/1.1"
        assert headers["If-None-Match"] == ETAG
        signed = verify_request(
            signer.public_key,
            headers,
            method="GET",
            path="/api/v1/device/update",
            query=f"state={STATE}",
            body=b"",
            now=1_000_100,
        )
        assert signed.device_id == device
        nonces.add(signed.nonce)
    assert len(nonces) == 5  # each request usable once: the replay cache refuses a second


def test_a_presigned_request_is_refused_with_another_devices_key_or_out_of_its_window() -> None:
    mine, other = (KeySigner(generate_private_key(KeyType.ECDSA_P256)) for _ in range(2))
    (raw,) = load.split_requests(
        load.presign(load.IdleCheckIn(STATE, ETAG), [("WBA1", mine)], now=1_000_000)
    )
    _, headers = _headers(raw)
    args = {"method": "GET", "path": "/api/v1/device/update", "query": f"state={STATE}"}
    with pytest.raises(RejectedError):
        verify_request(other.public_key, headers, body=b"", now=1_000_000, **args)  # type: ignore[arg-type]
    with pytest.raises(RejectedError):  # the bench must run within the 300 s window
        verify_request(mine.public_key, headers, body=b"", now=1_000_301, **args)  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_split_requests_takes_whole_requests_or_refuses(data: bytes) -> None:
    try:
        parts = load.split_requests(data)
    except ValueError:
        assert not data.endswith(b"\r\n\r\n") and data
        return
    assert b"".join(parts) == data
    assert all(p.endswith(b"\r\n\r\n") for p in parts)


def test_wrk_result_line() -> None:
    line = {
        "requests": 3000,
        "duration_us": 2_000_000,
        "bytes": 1,
        "errors": {"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0},
        "latency_us": {"p50": 1500, "p90": 3000, "p99": 9000, "max": 12000, "mean": 2.5},
        "statuses": {"304": 2998, "401": 2},
        "exhausted": 0,
    }
    result = load.parse_wrk("Running 2s test\nWRK-JSON " + json.dumps(line) + "\n")
    assert result.rate == 1500
    assert (result.p50_ms, result.p99_ms) == (1.5, 9.0)
    assert result.statuses == {304: 2998, 401: 2}
    assert result.unexpected(304) == 3  # two 401s (wrk counts them as errors too) and a read error
    with pytest.raises(ValueError):
        load.parse_wrk("Running 2s test\n  2 threads and 32 connections\n")


def test_wrk_script_sends_each_request_once_per_thread_split() -> None:
    script = load.wrk_script(2)
    assert script.startswith("counter_total = 2\n")
    assert "k % counter_total == index" in script  # each thread its own requests


def test_cpu_seconds_of_a_process_tree() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass\nprint(1, flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == b"1\n"
        assert child.pid in load.process_tree(os.getpid())
        assert load.cpu_seconds([child.pid]) >= 0.25
        assert load.cpu_seconds([2**22 + 12345]) == 0  # gone: counts nothing
    finally:
        child.kill()
        child.wait()


def test_profile_summary_charges_the_deepest_known_frame() -> None:
    collapsed = "\n".join(
        [
            "main (a.py:1);run (uvicorn/server.py:1);verify_request (otaguard/protocol/s.py:1) 6",
            "main (a.py:1);handle (fastapi/routing.py:1);execute (psycopg/cursor.py:1) 3",
            "main (a.py:1);handle (fastapi/routing.py:1) 1",
            "garbage line",
        ]
    )
    shares = dict(load.summarise_profile(collapsed))
    assert shares == {
        "request signature check (ECDSA P-256 verify, key loading)": 0.6,
        "database client (SQLAlchemy, psycopg)": 0.3,
        "FastAPI (routing, dependencies, parameters)": 0.1,
    }
    assert load.top_self(collapsed, 1) == [("verify_request (otaguard/protocol/s.py:1)", 0.6)]
    assert load.summarise_profile("") == []


def _results(date: str, commit: str, sections: dict[str, str]) -> str:
    head = (
        "# otaguard benchmark results\n\n| | |\n|---|---|\n"
        f"| Date | {date} |\n| otaguard commit | {commit} |\n"
    )
    return head + "".join(f"\n## {t}\n\n{b}\n" for t, b in sections.items())


def test_keep_others_replaces_run_sections_and_marks_the_rest() -> None:
    previous = _results("day 1", "aaa", {"A": "old a", "B": "old b", "C": "old c"})
    new = _results("day 2", "bbb", {"B": "new b", "D": "new d"})
    merged = runner.keep_others(previous, new)
    head, sections = runner._sections(merged)
    assert "day 2" in head and "day 1" not in head
    assert [t for t, _ in sections] == ["A", "B", "C", "D"]
    bodies = dict(sections)
    assert "new b" in bodies["B"] and "Carried over" not in bodies["B"]
    assert "old a" in bodies["A"] and "run of day 1, commit aaa" in bodies["A"]
    # carried over twice: still the run that measured it
    again = runner.keep_others(merged, _results("day 3", "ccc", {"D": "newer d"}))
    bodies = dict(runner._sections(again)[1])
    assert "run of day 1, commit aaa" in bodies["A"] and "day 2" not in bodies["A"]
    assert "run of day 2, commit bbb" in bodies["B"]


titles = st.lists(
    st.text("ABCXYZ :", min_size=1, max_size=8).map(str.strip).filter(bool),
    unique=True,
    max_size=5,
)


@given(titles, titles)
def test_keep_others_keeps_every_title_once(old: list[str], new: list[str]) -> None:
    merged = runner.keep_others(
        _results("d1", "c1", {t: f"old {t}" for t in old}),
        _results("d2", "c2", {t: f"new {t}" for t in new}),
    )
    got = [t for t, _ in runner._sections(merged)[1]]
    assert sorted(got) == sorted(set(old) | set(new))
    for title, body in runner._sections(merged)[1]:
        assert (f"new {title}" in body) == (title in new)
