"""FLAG_JOINED: small deltas carry one LZMA2 stream for control, diff and extra bytes."""

from __future__ import annotations

import lzma
from collections.abc import Callable
from dataclasses import replace

import pytest

from helpers_delta import Pair, apply_bytes, container_of, resign, split_container
from otaguard.delta.format import (
    FLAG_FULL,
    FLAG_JOINED,
    FLAG_ZSTD,
    MAX_JOINED_STREAM,
    MAX_PREDICTED,
    DeltaHeader,
    Filter,
    encode_header,
    lzma_filters,
)
from otaguard.errors import DigestMismatchError, MalformedError, RejectedError, TruncatedError


def _joined(code_pair: Pair) -> bytes:
    delta = code_pair.delta(chunk_size=1 << 16, zstd=False)
    assert split_container(delta)[0].joined
    return delta


def _raw(head: DeltaHeader, stream: bytes) -> bytes:
    filters = lzma_filters(Filter.NONE, head.dict_size)
    return lzma.decompress(stream, format=lzma.FORMAT_RAW, filters=filters)


def _xz(head: DeltaHeader, raw: bytes) -> bytes:
    filters = lzma_filters(Filter.NONE, head.dict_size)
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)


def test_small_images_join_their_streams_and_round_trip(code_pair: Pair) -> None:
    joined = _joined(code_pair)
    separate = code_pair.delta(chunk_size=1 << 16, zstd=False, predictor=None)
    assert apply_bytes(code_pair.old, joined, code_pair.trusted) == code_pair.new
    assert apply_bytes(code_pair.old, joined, None) == code_pair.new
    head, rest, _zdict = split_container(joined)
    assert head.streams_length == head.extra_length == len(rest)
    raw = _raw(head, rest)
    assert len(raw) > head.control_length + head.diff_length  # raw lengths, extra after them
    assert len(separate) == len(joined)  # the same choice, deterministic


def test_several_chunks_join_too_and_keep_their_chunk_checks(pair: Pair) -> None:
    """A many-chunk delta whose streams are small joins them (a rootfs tar: -28 bytes)."""
    pair = Pair(pair.key, pair.old, pair.new)  # may join
    delta = pair.delta()
    head, rest, _zdict = split_container(delta)
    assert head.chunk_count > 1 and head.joined
    assert len(delta) < len(Pair(pair.key, pair.old, pair.new, join=False).delta())
    assert apply_bytes(pair.old, delta, pair.trusted) == pair.new
    assert apply_bytes(pair.old, delta, None) == pair.new
    # a chunk's output check still stops a wrong chunk: here the first entry of the table
    assert head.table_length == 4 * (head.chunk_count - 1)
    header = len(container_of(delta)) - len(rest)  # the table follows the header
    raw = bytearray(container_of(delta))
    raw[header] ^= 0xFF
    with pytest.raises(DigestMismatchError, match="chunk 0"):
        apply_bytes(pair.old, resign(pair.key, delta, bytes(raw)), None)


def _forge(
    code_pair: Pair, edit: Callable[[DeltaHeader, bytes], tuple[DeltaHeader, bytes]]
) -> bytes:
    delta = _joined(code_pair)
    head, rest, zdict = split_container(delta)
    head, rest = edit(head, rest)
    return resign(code_pair.key, delta, encode_header(head, zdict) + rest)


def _reencoded(cut: Callable[[bytes], bytes]) -> Callable[..., tuple[DeltaHeader, bytes]]:
    def edit(head: DeltaHeader, rest: bytes) -> tuple[DeltaHeader, bytes]:
        stream = _xz(head, cut(_raw(head, rest)))
        return replace(head, extra_length=len(stream)), stream

    return edit


CASES: dict[str, tuple[Callable[..., tuple[DeltaHeader, bytes]], type[RejectedError]]] = {
    "joined and full": (
        lambda h, r: (replace(h, flags=FLAG_JOINED | FLAG_FULL), r),
        MalformedError,
    ),
    "joined and zstd": (
        lambda h, r: (replace(h, flags=FLAG_JOINED | FLAG_ZSTD), r),
        MalformedError,
    ),
    "joined with a branch filter": (
        lambda h, r: (replace(h, extra_filter=Filter.X86), r),
        MalformedError,
    ),
    "joined stream longer than its cap": (
        lambda h, r: (replace(h, extra_length=MAX_JOINED_STREAM + 1), r),
        MalformedError,
    ),
    "control + diff over 4 MiB": (
        lambda h, r: (replace(h, control_length=MAX_PREDICTED, diff_length=1), r),
        MalformedError,
    ),
    "control + diff longer than the stream": (
        lambda h, r: (replace(h, diff_length=h.diff_length + len(_raw(h, r))), r),
        MalformedError,
    ),
    "control part one byte short": (
        lambda h, r: (replace(h, control_length=h.control_length - 1), r),
        MalformedError,
    ),
    "corrupt joined stream": (
        lambda h, r: (h, r[:3] + bytes([r[3] ^ 0xFF]) + r[4:]),
        MalformedError,
    ),
    "joined stream cut": (
        lambda h, r: (replace(h, extra_length=len(r) - 4), r[:-4]),
        MalformedError,
    ),
    "trailing bytes after the joined stream": (
        lambda h, r: (replace(h, extra_length=len(r) + 1), r + b"\x00"),
        MalformedError,
    ),
    "extra part with trailing bytes": (_reencoded(lambda raw: raw + b"\x00"), MalformedError),
    "extra part short": (_reencoded(lambda raw: raw[:-1]), MalformedError),
    "joined stream decoding past 4 MiB": (
        _reencoded(lambda raw: raw + bytes(MAX_PREDICTED)),
        MalformedError,
    ),
    "container longer than its joined stream": (
        lambda h, r: (replace(h, extra_length=len(r) + 5), r),
        TruncatedError,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampered_joined_delta_is_refused(code_pair: Pair, name: str) -> None:
    edit, error = CASES[name]
    forged = _forge(code_pair, edit)
    with pytest.raises(error):
        apply_bytes(code_pair.old, forged, code_pair.trusted)
