"""The zstd method (FLAG_ZSTD): small images, the old image as the frame's dictionary."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_delta import (
    Pair,
    apply_bytes,
    container_of,
    make_delta,
    parts_of,
    refused_or_exact,
    resign,
    zdict_of,
)
from otaguard.delta import open_delta, reconstruct
from otaguard.delta.format import (
    FLAG_FULL,
    FLAG_ZSTD,
    DeltaHeader,
    encode_header,
)
from otaguard.errors import DigestMismatchError, MalformedError, RejectedError, TruncatedError

CHUNK = 1 << 16  # the pair's old image and new payload fit one chunk together


def _zstd_delta(pair: Pair) -> bytes:
    delta, _stats = make_delta(pair.key, pair.old, pair.new, chunk_size=CHUNK, zstd=True)
    return delta


def _rebuilt(pair: Pair, mutate) -> bytes:
    delta = _zstd_delta(pair)
    zdict = zdict_of(delta)
    head, table, streams = parts_of(container_of(delta), zdict)
    assert head.flags & FLAG_ZSTD and not streams[0] and not streams[1]
    head, table, frame = mutate(head, table, streams[2])
    if isinstance(frame, list):
        body = b"".join(frame)
        lengths = {"control_length": len(frame[0]), "diff_length": len(frame[1])}
        frame_len = len(frame[2])
    else:
        body, lengths, frame_len = frame, {}, len(frame)
    head = replace(head, extra_length=frame_len, **lengths)
    return resign(pair.key, delta, encode_header(head, zdict, table) + body)


def test_zstd_round_trip(pair: Pair) -> None:
    delta = _zstd_delta(pair)
    assert apply_bytes(pair.old, delta, pair.trusted) == pair.new
    assert apply_bytes(pair.old, delta, None) == pair.new


def test_zstd_is_chosen_when_smaller_and_only_for_small_images(pair: Pair) -> None:
    auto = make_delta(pair.key, pair.old, pair.new, chunk_size=CHUNK)[0]
    never = make_delta(pair.key, pair.old, pair.new, chunk_size=CHUNK, zstd=False)[0]
    assert len(auto) == min(len(_zstd_delta(pair)), len(never))
    big = make_delta(pair.key, pair.old, pair.new, chunk_size=1 << 12, zstd=True)[0]
    head, _table, _streams = parts_of(container_of(big), zdict_of(big))
    assert not head.flags & FLAG_ZSTD  # 20 KB + 20 KB do not fit a 4 KiB chunk
    assert apply_bytes(pair.old, big, pair.trusted) == pair.new


def _frame_of(pair: Pair, payload: bytes, window_log: int = 16) -> bytes:
    dictionary = zstandard.ZstdCompressionDict(pair.old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        19, window_log=window_log, write_content_size=False
    )
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(
        payload
    )


def _payload(pair: Pair) -> bytes:
    delta = _zstd_delta(pair)
    head, _t, _s = parts_of(container_of(delta), zdict_of(delta))
    return pair.new[len(head.new_signed) : len(pair.new) - len(head.new_signatures)]


def _with(**changes: object):
    def mutate(head: DeltaHeader, table: list[bytes], frame: bytes):
        return replace(head, **changes), table, frame  # type: ignore[arg-type]

    return mutate


CASES = {
    "corrupt frame": (
        lambda h, t, f: (h, t, f[:10] + bytes([f[10] ^ 0xFF]) + f[11:]),
        RejectedError,
    ),
    "frame cut": (lambda h, t, f: (h, t, f[:-4]), MalformedError),
    "frame with trailing bytes": (lambda h, t, f: (h, t, f + b"\x00"), MalformedError),
    "frame with a control stream": (lambda h, t, f: (h, t, [b"\x00", b"", f]), MalformedError),
    "zstd and full": (_with(flags=FLAG_ZSTD | FLAG_FULL), MalformedError),
    "zstd for an image larger than a chunk": (_with(chunk_size=1 << 14), MalformedError),
    "zstd with an extra filter": (_with(extra_filter=1), MalformedError),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampered_zstd_delta_is_refused(pair: Pair, name: str) -> None:
    mutate, error = CASES[name]
    with pytest.raises(error):
        apply_bytes(pair.old, _rebuilt(pair, mutate), pair.trusted)


def test_frame_longer_than_the_payload_is_refused(pair: Pair) -> None:
    frame = _frame_of(pair, _payload(pair) + b"x" * 30_000)
    delta = _rebuilt(pair, lambda h, t, f: (h, t, frame))
    with pytest.raises(MalformedError, match="longer"):
        apply_bytes(pair.old, delta, pair.trusted)


def test_frame_needing_a_larger_window_than_declared_is_refused(pair: Pair) -> None:
    frame = _frame_of(pair, _payload(pair) * 20, window_log=20)  # declares a 1 MiB window
    delta = _rebuilt(pair, lambda h, t, f: (h, t, frame))
    with pytest.raises(MalformedError, match="memory"):
        apply_bytes(pair.old, delta, pair.trusted)


def test_frame_shorter_than_the_payload_is_refused(pair: Pair) -> None:
    frame = _frame_of(pair, _payload(pair)[:-100])
    delta = _rebuilt(pair, lambda h, t, f: (h, t, frame))
    with pytest.raises(MalformedError, match="shorter"):
        apply_bytes(pair.old, delta, pair.trusted)


def test_a_valid_frame_of_another_payload_fails_the_digest(pair: Pair) -> None:
    payload = bytearray(_payload(pair))
    payload[5] ^= 1
    delta = _rebuilt(pair, lambda h, t, f: (h, t, _frame_of(pair, bytes(payload))))
    with pytest.raises(DigestMismatchError):
        apply_bytes(pair.old, delta, pair.trusted)


def test_old_image_changing_after_the_base_check_is_refused(pair: Pair) -> None:
    delta = _zstd_delta(pair)
    stream = io.BytesIO(delta)
    opened = open_delta(stream, pair.trusted)
    reads = []
    changed = bytearray(pair.old)
    changed[-200] ^= 1

    def read_at(offset: int, n: int) -> bytes:
        reads.append(offset)
        data = pair.old if len(reads) == 1 else changed  # the base check reads it in one piece
        return bytes(data[offset : offset + n])

    with pytest.raises(DigestMismatchError, match="changed"):
        reconstruct(opened, stream, len(pair.old), read_at).read()


def test_truncated_zstd_delta_is_refused(pair: Pair) -> None:
    delta = _zstd_delta(pair)
    for cut in range(0, len(delta), max(1, len(delta) // 60)):
        with pytest.raises(RejectedError):
            apply_bytes(pair.old, delta[:cut], None)
    with pytest.raises(TruncatedError):
        apply_bytes(pair.old, resign(pair.key, delta, container_of(delta)[:-2]), pair.trusted)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_zstd_containers(pair: Pair, data: st.DataObject) -> None:
    """Any mutation of a zstd delta's container is refused cleanly or rebuilds the image."""
    delta = _ZSTD_DELTA.setdefault("delta", _zstd_delta(pair))
    container = bytearray(container_of(delta))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(container) - 1))
        if data.draw(st.booleans()):
            container[pos] ^= 1 << data.draw(st.integers(0, 7))
        else:
            del container[pos : pos + data.draw(st.integers(1, 16))]
    refused_or_exact(pair.old, pair.new, resign(pair.key, delta, bytes(container)))


_ZSTD_DELTA: dict[str, bytes] = {}
