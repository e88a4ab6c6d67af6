"""FLAG_JOINED: small images carry one LZMA2 stream for control, diff and extra bytes."""

from __future__ import annotations

import lzma
from collections.abc import Callable
from dataclasses import replace

import pytest

from helpers_delta import Pair, apply_bytes, resign, split_container
from otaguard.delta.format import (
    FLAG_FULL,
    FLAG_JOINED,
    FLAG_ZSTD,
    MAX_PREDICTED,
    DeltaHeader,
    Filter,
    encode_header,
    lzma_filters,
)
from otaguard.errors import MalformedError, RejectedError, TruncatedError


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


def test_several_chunks_never_join(pair: Pair) -> None:
    head, _rest, _zdict = split_container(pair.delta())
    assert head.chunk_count > 1 and not head.joined


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
    "joined on a large chunk table": (
        lambda h, r: (replace(h, chunk_size=1 << 12), r),
        MalformedError,
    ),
    "control + diff larger than a small image": (
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
    "joined stream decoding past a small image": (
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
