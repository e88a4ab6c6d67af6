"""Creating a delta container: suffix-array matching per chunk, then LZMA2 per stream.

One suffix array of the whole old image is built once (libdivsufsort, through
``detools``); every chunk of the new payload is then matched against the whole
old image with bsdiff's approximate-match heuristic (``detools.bsdiff``),
which yields bsdiff control triples. Each chunk's three streams (control,
diff, extra) are compressed separately with raw LZMA2 at preset 9e: the diff
stream is mostly zeros, the extra stream is new code, and mixing them hurts
both. The extra stream may get a branch filter (BCJ for x86, ARM, ARM Thumb),
chosen per chunk by trying them on a sample. A chunk whose literal
(compressed as is) is smaller than its delta is stored literally.

Memory on this side: the old image and its suffix array (5 bytes per old
byte) are file-backed mappings for large images, so the page cache, not the
heap, holds them; the heap holds one chunk and its streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import mmap
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from otaguard.delta.format import (
    CHUNK_HEAD,
    DEFAULT_CHUNK_SIZE,
    FLAG_FULL,
    ChunkHead,
    DeltaHeader,
    Filter,
    Method,
    chunk_count_for,
    dict_size_for,
    encode_chunk_head,
    encode_header,
    encode_triple,
    encode_zero_runs,
    lzma_filters,
)

#: ``delta create`` falls back to a compressed full image above this ratio (issue 6).
FULL_FALLBACK_RATIO = 0.70
#: A chunk whose delta exceeds this share of its raw size is also encoded literally (the
#: smaller wins); below it the literal cannot plausibly win and only its size is estimated
#: (zlib level 1: fast, and never smaller than LZMA2, so the estimate errs towards deltas).
LITERAL_PROBE = 0.20
#: Old images larger than this get their suffix array in a temporary file, not the heap.
HEAP_LIMIT = 64 << 20
#: divsufsort's 32-bit suffix array.
MAX_OLD_LENGTH = (1 << 31) - 2
_SAMPLE = 256 << 10
_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass(frozen=True)
class DeltaStats:
    chunks: int
    literal_chunks: int
    full_fallback: bool
    delta_bytes: int  # the container with every chunk as a delta
    full_bytes: int  # the container, all literal (estimated unless it fell back)
    container_bytes: int  # what was emitted


#: LZMA2 literal-context variants tried per stream (the decoder needs none of them).
_VARIANTS: tuple[dict[str, int], ...] = ({}, {"lc": 0, "pb": 0}, {"lc": 0, "lp": 1, "pb": 1})


def _compress(
    data: bytes, flt: Filter, dict_size: int, variant: int = 0, preset: int = _PRESET
) -> bytes:
    if not data:
        return b""
    filters = lzma_filters(flt, dict_size, preset=preset, **_VARIANTS[variant])
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def _compress_best(
    data: bytes, dict_size: int, filters: Sequence[Filter] = (Filter.NONE,)
) -> tuple[Filter, bytes]:
    """The smallest encoding over branch filters x LZMA2 variants (by sample if large)."""
    if not data:
        return Filter.NONE, b""
    variants = range(len(_VARIANTS))
    if len(data) <= _SAMPLE:
        options = [(f, _compress(data, f, dict_size, v)) for f in filters for v in variants]
        return min(options, key=lambda o: (len(o[1]), o[0]))
    sample = data[:_SAMPLE]

    def size(flt: Filter, variant: int) -> int:
        return len(_compress(sample, flt, dict_size, variant, preset=6))

    flt = min(filters, key=lambda f: (size(f, 0), f))
    variant = min(variants, key=lambda v: (size(flt, v), v)) if len(variants) > 1 else 0
    return flt, _compress(data, flt, dict_size, variant)


#: Periodic runs (period 1 to 4) at least this long are not matched but sent as extra bytes.
_RUN = re.compile(rb"(.{1,4}?)\1{255,}", re.S)
_MIN_RUN = 1024
_MAX_RUN_SEARCHES = 64


def _runs(data: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in _RUN.finditer(data) if m.end() - m.start() >= _MIN_RUN]


def _varint(data: bytes) -> int:
    """detools' size encoding: 6 bits + sign in the first byte, then 7 bits per byte."""
    byte = data[0]
    value = byte & 0x3F
    shift = 6
    i = 1
    while byte & 0x80:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        i += 1
    return -value if data[0] & 0x40 else value


class _Matcher:
    """The whole old image and its suffix array, built once."""

    def __init__(self, old: bytes | mmap.mmap) -> None:
        from detools import bsdiff  # type: ignore[import-untyped]
        from detools.suffix_array import divsufsort  # type: ignore[import-untyped]

        self._bsdiff = bsdiff
        self.old = old
        self._run_cache: dict[tuple[bytes, int], int | None] = {}
        self._stack = contextlib.ExitStack()
        size = 4 * (len(old) + 1)
        if len(old) > HEAP_LIMIT:
            backing = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
            backing.truncate(size)
            self.sa: bytearray | mmap.mmap = self._stack.enter_context(
                mmap.mmap(backing.fileno(), size)
            )
        else:
            self.sa = bytearray(size)
        if old:
            divsufsort(old, self.sa)

    def close(self) -> None:
        self._stack.close()

    def _segment(self, new: bytes) -> list[tuple[bytes, bytes, int]]:
        if not self.old or not new:
            return [(b"", new, 0)]
        parts = self._bsdiff.create_patch(self.sa, self.old, new, bytearray(len(new) + 1))
        out = []
        for i in range(0, len(parts) - 4, 5):
            out.append((bytes(parts[i + 1]), bytes(parts[i + 3]), _varint(parts[i + 4])))
        if sum(len(d) + len(e) for d, e, _ in out) != len(new):  # pragma: no cover
            raise RuntimeError("detools produced a patch that does not cover the chunk")
        return out

    def _find_run(self, run: bytes, near: int) -> int | None:
        """Where the old image holds ``run``: right at ``near`` if it does, else anywhere."""
        old = self.old
        if old[near : near + len(run)] == run:
            return near
        key = (run[:8], len(run).bit_length())
        if key not in self._run_cache:
            if len(self._run_cache) >= _MAX_RUN_SEARCHES:  # each miss scans the old image
                return None
            at = old.find(run)
            self._run_cache[key] = None if at < 0 else at
        found = self._run_cache[key]
        if found is not None and old[found : found + len(run)] == run:
            return found
        return None

    def triples(self, new: bytes) -> list[tuple[bytes, bytes, int]]:
        """(diff bytes, extra bytes, seek) per bsdiff step; old position starts at 0.

        bsdiff's approximate matching is quadratic on long periodic runs (an ext4 image's
        zeroed blocks, erased flash): 7 s for 256 KiB of zeros. Such runs are cut out and
        sent as extra bytes, which LZMA2 shrinks to almost nothing; the rest is matched.
        """
        steps: list[tuple[int, bytes, bytes]] = []  # (absolute old start, diff, extra)
        pos = 0
        for start, end in [*_runs(new), (len(new), len(new))]:
            old_pos = steps[-1][0] + len(steps[-1][1]) if steps else 0
            relative = 0
            for diff, extra, seek in self._segment(new[pos:start]) if start > pos else []:
                steps.append((relative, diff, extra))
                relative += len(diff) + seek
            if end > start:
                old_pos = steps[-1][0] + len(steps[-1][1]) if steps else 0
                run = new[start:end]
                found = self._find_run(run, old_pos)
                if found is None:
                    steps.append((old_pos, b"", run))
                else:  # the old image has the run too: an all-zero diff, a few bytes coded
                    steps.append((found, bytes(len(run)), b""))
            pos = end
        if steps and steps[0][0]:
            steps.insert(0, (0, b"", b""))
        out = []
        for i, (old_start, diff, extra) in enumerate(steps):
            following = steps[i + 1][0] if i + 1 < len(steps) else old_start + len(diff)
            out.append((diff, extra, following - old_start - len(diff)))
        return out


def _encode_bsdiff(
    matcher: _Matcher, new: bytes, dict_size: int, filters: Sequence[Filter]
) -> tuple[ChunkHead, bytes]:
    old = matcher.old
    control: list[tuple[int, int, int]] = []
    diffs: list[bytes] = []
    extras: list[bytes] = []
    src_hash = hashlib.sha256()
    pos = 0
    for diff, extra, seek in matcher.triples(new):
        if not diff and not extra and control:
            add, copy, prev = control[-1]
            control[-1] = (add, copy, prev + seek)
            pos += seek
            continue
        control.append((len(diff), len(extra), seek))
        src_hash.update(old[pos : pos + len(diff)])
        diffs.append(diff)
        extras.append(extra)
        pos += len(diff) + seek
    flt, extra_stream = _compress_best(b"".join(extras), dict_size, filters)
    diff_data = b"".join(diffs)
    method, diff_stream = min(
        (
            (Method.BSDIFF, _compress_best(diff_data, dict_size)[1]),
            (Method.BSDIFF_ZRLE, _compress_best(encode_zero_runs(diff_data), dict_size)[1]),
        ),
        key=lambda m: (len(m[1]), m[0]),
    )
    streams = (
        _compress_best(b"".join(encode_triple(*t) for t in control), dict_size)[1],
        diff_stream,
        extra_stream,
    )
    head = ChunkHead(
        method,
        flt,
        len(new),
        hashlib.sha256(new).digest(),
        src_hash.digest(),
        *map(len, streams),
    )
    return head, b"".join(streams)


def _encode_literal(
    new: bytes, dict_size: int, filters: Sequence[Filter]
) -> tuple[ChunkHead, bytes]:
    flt, data = _compress_best(new, dict_size, filters)
    empty = hashlib.sha256(b"").digest()
    head = ChunkHead(
        Method.LITERAL, flt, len(new), hashlib.sha256(new).digest(), empty, 0, 0, len(data)
    )
    return head, data


def _chunks(payload: bytes | memoryview | mmap.mmap, size: int) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield bytes(payload[start : start + size])


def create_container(
    old: bytes | mmap.mmap,
    new_signed: bytes,
    new_payload: bytes | memoryview | mmap.mmap,
    new_signatures: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    filters: Sequence[Filter] = tuple(Filter),
    fallback_ratio: float = FULL_FALLBACK_RATIO,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[bytes], DeltaStats]:
    """Encode the container; returns its parts (to write in order) and what was decided.

    ``old`` is the whole old image file; the new image is given as its three
    parts (signed header, payload, signature block) so they are carried verbatim.
    """
    if len(old) > MAX_OLD_LENGTH:
        raise ValueError("the old image is larger than 2 GiB")
    dict_size = dict_size_for(chunk_size)
    target = hashlib.sha256(new_signed)
    count = chunk_count_for(len(new_payload), chunk_size)
    deltas: list[tuple[ChunkHead, bytes]] = []
    literals: list[tuple[ChunkHead, bytes] | None] = []
    estimates: list[int] = []
    matcher = _Matcher(old)
    try:
        for index, chunk in enumerate(_chunks(new_payload, chunk_size)):
            target.update(chunk)
            delta = _encode_bsdiff(matcher, chunk, dict_size, filters)
            deltas.append(delta)
            literal = None
            if len(delta[1]) > LITERAL_PROBE * len(chunk):
                literal = _encode_literal(chunk, dict_size, filters)
                estimates.append(len(literal[1]))
            else:  # clearly a delta: estimate its compressed size cheaply
                estimates.append(len(zlib.compress(chunk, 1)))
            literals.append(literal)
            if progress is not None:
                progress(index + 1, count)
    finally:
        matcher.close()
    target.update(new_signatures)
    best = [
        d if lit is None or len(d[1]) <= len(lit[1]) else lit
        for d, lit in zip(deltas, literals, strict=True)
    ]
    base_sha256 = hashlib.sha256(old).digest()

    def head(flags: int) -> bytes:
        return encode_header(
            DeltaHeader(
                flags,
                chunk_size,
                len(old),
                base_sha256,
                len(new_signed) + len(new_payload) + len(new_signatures),
                target.digest(),
                new_signed,
                new_signatures,
                count,
            )
        )

    def size(chosen: list[tuple[ChunkHead, bytes]]) -> int:
        return len(head(0)) + sum(CHUNK_HEAD.size + len(b) for _h, b in chosen)

    delta_bytes = size(deltas)
    full_bytes = len(head(0)) + sum(CHUNK_HEAD.size + e for e in estimates)
    full = count > 0 and size(best) > fallback_ratio * full_bytes
    chosen = best
    if full:
        chosen = [
            lit or _encode_literal(chunk, dict_size, filters)
            for lit, chunk in zip(literals, _chunks(new_payload, chunk_size), strict=True)
        ]
        full_bytes = size(chosen)
    parts = [head(FLAG_FULL if full else 0)]
    for chunk_head, body in chosen:
        parts.append(encode_chunk_head(chunk_head))
        parts.append(body)
    stats = DeltaStats(
        chunks=count,
        literal_chunks=sum(h.method is Method.LITERAL for h, _ in chosen),
        full_fallback=full,
        delta_bytes=delta_bytes,
        full_bytes=full_bytes,
        container_bytes=sum(map(len, parts)),
    )
    return parts, stats


def describe(stats: DeltaStats) -> dict[str, Any]:
    return {
        "chunks": stats.chunks,
        "literal_chunks": stats.literal_chunks,
        "full_fallback": stats.full_fallback,
        "delta_bytes": stats.delta_bytes,
        "full_bytes": stats.full_bytes,
        "container_bytes": stats.container_bytes,
    }
