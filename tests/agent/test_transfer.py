"""Resumable downloads over real HTTP: cuts, power cuts, lying servers, slow sources, bad bytes."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import TargetFile

from helpers_range import Fault, RangeServer
from otaguard.agent.chunks import HEADER, RECORD, ChunkStore, parse_journal
from otaguard.agent.config import AgentConfig, Failure
from otaguard.agent.failures import TransientError
from otaguard.agent.transfer import fetch_target, http_client, target_key
from otaguard.errors import RepositoryRejectedError

CHUNK = 4096
DATA = random.Random(7).randbytes(10 * CHUNK + 123)  # 11 chunks, the last one short
NAME = "fw/app.img"
URL_PATH = "/targets/fw/app.img"
CONFIG = AgentConfig(chunk_size=CHUNK, read_timeout=5.0, rate_grace=0.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RangeServer]:
    root = tmp_path / "www"
    (root / "targets" / "fw").mkdir(parents=True)
    (root / "targets" / "fw" / "app.img").write_bytes(DATA)
    srv = RangeServer(root)
    yield srv
    srv.close()


def _info(data: bytes = DATA) -> TargetFile:
    return TargetFile.from_data(NAME, data, ["sha256"])


def _fetch(server: RangeServer, tmp_path: Path, config: AgentConfig = CONFIG) -> Path:
    with http_client(config) as client:
        return fetch_target(
            client,
            f"{server.url}/targets/",
            _info(),
            tmp_path / "dl",
            config,
            consistent_snapshot=False,
        )


def _store(tmp_path: Path) -> ChunkStore:
    key = target_key(_info())
    return ChunkStore(tmp_path / "dl" / key.hex()[:32], key=key, length=len(DATA), chunk_size=CHUNK)


def _starts(server: RangeServer) -> list[int]:
    return [int(r.split("=")[1].split("-")[0]) for r in server.ranges(URL_PATH) if r]


def test_honest_server_one_range_request(server: RangeServer, tmp_path: Path) -> None:
    path = _fetch(server, tmp_path)
    assert path.read_bytes() == DATA
    assert server.ranges(URL_PATH) == [f"bytes=0-{len(DATA) - 1}"]


def test_a_cut_resumes_at_the_first_incomplete_chunk(server: RangeServer, tmp_path: Path) -> None:
    server.fault(URL_PATH, Fault(cut_after=3 * CHUNK + 100))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path)
    assert caught.value.failure is Failure.NETWORK
    with _store(tmp_path) as store:
        assert store.verified == {0, 1, 2}
    path = _fetch(server, tmp_path)
    assert path.read_bytes() == DATA
    assert _starts(server) == [0, 3 * CHUNK]  # the completed chunks are never fetched again


def test_cuts_at_every_chunk_boundary_and_inside_each(server: RangeServer, tmp_path: Path) -> None:
    offsets = sorted({k * CHUNK + d for k in range(11) for d in (0, 1, CHUNK - 1)} - {0})
    offsets = [o for o in offsets if o < len(DATA)]
    for offset in offsets:
        server.fault(URL_PATH, Fault(cut_after=offset - _already(tmp_path)))
        with pytest.raises(TransientError):
            _fetch(server, tmp_path)
        assert os.path.getsize(_store_path(tmp_path)) <= len(DATA)
    assert _fetch(server, tmp_path).read_bytes() == DATA
    starts = _starts(server)
    assert starts == sorted(starts)  # always forward, never a completed chunk again
    assert len(_journal_records(tmp_path)) == 11  # each chunk written exactly once


def _already(tmp_path: Path) -> int:
    if not _store_path(tmp_path).exists():
        return 0
    with _store(tmp_path) as store:
        runs = store.missing_runs()
        return store.bounds(runs[0][0])[0] if runs else len(DATA)


def _store_path(tmp_path: Path) -> Path:
    return tmp_path / "dl" / target_key(_info()).hex()[:32] / "data"


def _journal_records(tmp_path: Path) -> list[bytes]:
    raw = (_store_path(tmp_path).parent / "journal").read_bytes()[HEADER.size :]
    return [raw[i : i + RECORD.size] for i in range(0, len(raw), RECORD.size)]


def test_power_cut_damage_is_found_and_only_that_is_fetched(
    server: RangeServer, tmp_path: Path
) -> None:
    server.fault(URL_PATH, Fault(cut_after=6 * CHUNK + 10))
    with pytest.raises(TransientError):
        _fetch(server, tmp_path)
    data_file = _store_path(tmp_path)
    journal = data_file.parent / "journal"
    # a torn sector in chunk 2 (its record survived), and the last record torn in half
    with open(data_file, "r+b") as handle:
        handle.seek(2 * CHUNK + 77)
        handle.write(b"\x00\xff\x00")
    raw = journal.read_bytes()
    journal.write_bytes(raw[: -RECORD.size // 2])  # record of chunk 5 half-written
    with _store(tmp_path) as store:
        assert store.verified == {0, 1, 3, 4}
    assert _fetch(server, tmp_path).read_bytes() == DATA
    assert _starts(server) == [0, 2 * CHUNK, 5 * CHUNK]


def test_server_ignoring_range_does_not_rewrite_completed_chunks(
    server: RangeServer, tmp_path: Path
) -> None:
    server.fault(URL_PATH, Fault(cut_after=4 * CHUNK + 5))
    with pytest.raises(TransientError):
        _fetch(server, tmp_path)
    server.fault(URL_PATH, Fault(ignore_range=True))
    assert _fetch(server, tmp_path).read_bytes() == DATA
    assert len(_journal_records(tmp_path)) == 11


@pytest.mark.parametrize(
    "lie",
    [
        "bytes 0-4095/41083",  # another start than asked
        f"bytes {4 * CHUNK}-{len(DATA) - 1}/{len(DATA) + 1}",  # another total
        f"bytes {4 * CHUNK}-{len(DATA)}/{len(DATA)}",  # past the end
        "bytes */41083",
        "items 1-2/3",
    ],
)
def test_wrong_content_range_stores_nothing(server: RangeServer, tmp_path: Path, lie: str) -> None:
    server.fault(URL_PATH, Fault(cut_after=4 * CHUNK + 5))
    with pytest.raises(TransientError):
        _fetch(server, tmp_path)
    before = _store_path(tmp_path).read_bytes()
    server.fault(URL_PATH, Fault(content_range=lie))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path)
    assert caught.value.failure is Failure.BAD_RESPONSE
    assert _store_path(tmp_path).read_bytes() == before
    assert _fetch(server, tmp_path).read_bytes() == DATA


def test_never_more_than_the_signed_length_is_stored(server: RangeServer, tmp_path: Path) -> None:
    server.fault(URL_PATH, Fault(ignore_range=True, extra=b"\x00" * 500_000))
    path = _fetch(server, tmp_path)
    assert path.read_bytes() == DATA and os.path.getsize(path) == len(DATA)


def test_a_longer_announced_body_is_refused_before_reading(
    server: RangeServer, tmp_path: Path
) -> None:
    server.fault(URL_PATH, Fault(ignore_range=True, other_bytes=DATA + b"more"))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path)
    assert caught.value.failure is Failure.BAD_RESPONSE
    assert os.path.getsize(_store_path(tmp_path)) == 0


def test_slow_source_is_abandoned_and_its_chunks_kept(server: RangeServer, tmp_path: Path) -> None:
    server.fault(URL_PATH, Fault(cut_after=2 * CHUNK))
    with pytest.raises(TransientError):
        _fetch(server, tmp_path)
    slow = AgentConfig(chunk_size=CHUNK, min_rate=5000, rate_window=0.2, rate_grace=0.0)
    server.fault(URL_PATH, Fault(trickle=0.005))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path, slow)
    assert caught.value.failure is Failure.SLOW
    with _store(tmp_path) as store:
        assert store.verified == {0, 1}
    assert _fetch(server, tmp_path).read_bytes() == DATA


def test_stalled_source_times_out_as_slow(server: RangeServer, tmp_path: Path) -> None:
    stalled = AgentConfig(chunk_size=CHUNK, read_timeout=0.2, rate_grace=60.0)
    server.fault(URL_PATH, Fault(trickle=1.0))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path, stalled)
    assert caught.value.failure is Failure.SLOW


def test_flipped_byte_is_refused_and_the_download_discarded(
    server: RangeServer, tmp_path: Path
) -> None:
    server.fault(URL_PATH, Fault(flip_at=5 * CHUNK + 3))
    with pytest.raises(RepositoryRejectedError, match="hash"):
        _fetch(server, tmp_path)
    assert not _store_path(tmp_path).parent.exists()
    assert _fetch(server, tmp_path).read_bytes() == DATA  # a fresh offer starts afresh


def test_other_bytes_of_the_same_length_are_refused(server: RangeServer, tmp_path: Path) -> None:
    other = bytes(len(DATA))
    server.fault(URL_PATH, Fault(other_bytes=other))
    with pytest.raises(RepositoryRejectedError):
        _fetch(server, tmp_path)


@pytest.mark.parametrize("status", [500, 503, 429, 404])
def test_server_errors_are_transient(server: RangeServer, tmp_path: Path, status: int) -> None:
    server.fault(URL_PATH, Fault(status=status))
    with pytest.raises(TransientError) as caught:
        _fetch(server, tmp_path)
    assert caught.value.failure is Failure.SERVER


def test_a_journal_for_another_target_starts_afresh(tmp_path: Path) -> None:
    key = target_key(_info())
    directory = tmp_path / "d"
    with ChunkStore(directory, key=key, length=len(DATA), chunk_size=CHUNK) as store:
        store.put(0, DATA[:CHUNK])
    with ChunkStore(directory, key=key, length=len(DATA), chunk_size=CHUNK // 2) as store:
        assert store.verified == frozenset()
    with ChunkStore(directory, key=bytes(32), length=len(DATA), chunk_size=CHUNK) as store:
        assert store.verified == frozenset()


def test_put_checks_the_chunk_length(tmp_path: Path) -> None:
    with ChunkStore(tmp_path / "d", key=bytes(32), length=100, chunk_size=64) as store:
        with pytest.raises(ValueError):
            store.put(1, b"x" * 64)  # the last chunk is 36 bytes
        with pytest.raises(IndexError):
            store.put(2, b"x")
        store.put(1, b"x" * 36)
        assert store.missing_runs() == [(0, 0)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=HEADER.size + 6 * RECORD.size), st.integers(0, 5))
def test_parse_journal_never_crashes(data: bytes, cut: int) -> None:
    key = bytes(range(32))
    from otaguard.agent.chunks import _header, _record

    good = _header(1000, 200, key) + b"".join(_record(i, bytes([i]) * 32) for i in range(5))
    for blob in (data, good[: len(good) - cut * 7], good + data):
        recorded = parse_journal(blob, 1000, 200, key)
        assert recorded is None or all(0 <= i < 5 for i in recorded)
    assert parse_journal(good, 1000, 200, key) == {i: bytes([i]) * 32 for i in range(5)}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_content_range_parser_takes_only_one_exact_range(value: str) -> None:
    from otaguard.agent.transfer import _parse_content_range

    try:
        first, last, total = _parse_content_range(value)
    except TransientError as exc:
        assert exc.failure is Failure.BAD_RESPONSE
        return
    assert value == f"bytes {first}-{last}/{total}"
