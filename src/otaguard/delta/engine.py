"""Creating a delta container: suffix-array matching per chunk, then LZMA2 per stream.

One suffix array of the whole old image is built once (libdivsufsort, through
``detools``); every chunk of the new payload is then matched against the whole
old image with bsdiff's approximate-match heuristic (``detools.bsdiff``),
which yields bsdiff control triples; tiny far-away matches and adds that run
on are merged away. The three streams (control, diff, extra) are shared by
all chunks, each compressed once with raw LZMA2 at preset 9e: the diff stream
is mostly zeros, the extra stream is new code, and mixing them hurts both. The
extra stream may get a branch filter (BCJ for x86, ARM, ARM Thumb), chosen by
trying them on a sample. A chunk that is cheaper as is becomes one copy step.
Small images (old image and new payload within one chunk) also try one zstd
frame with the old image as its dictionary; the smaller container wins.

Memory on this side: the old image and its suffix array (5 bytes per old
byte) are file-backed mappings for large images, so the page cache, not the
heap, holds them; the heap holds one chunk and the raw streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import mmap
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from otaguard.delta.apply import sub_bytes
from otaguard.delta.format import (
    CHUNK_HASH,
    DEFAULT_CHUNK_SIZE,
    FLAG_FULL,
    FLAG_JOINED,
    FLAG_ZSTD,
    MAX_PREDICTED,
    MIN_DICT_LOG,
    DeltaHeader,
    DiffCoding,
    Filter,
    chunk_count_for,
    encode_header,
    encode_triple,
    encode_zero_runs,
    lzma_filters,
    max_dict_log,
)
from otaguard.delta.predict import (
    MAX_SEGMENTS,
    Absolute,
    Alignment,
    Arch,
    elf_code_range,
    payload_offset,
    predict,
    raw_range,
)
from otaguard.image.envelope_format import parse_protected

#: ``delta create`` falls back to a compressed full image above this ratio (issue 6).
FULL_FALLBACK_RATIO = 0.70
#: A chunk whose unmatched bytes exceed this share of it is also judged as is (zlib level
#: 1 sizes of both: fast); below it sending it as is cannot plausibly win.
LITERAL_PROBE = 0.20
#: Old images larger than this get their suffix array in a temporary file, not the heap.
HEAP_LIMIT = 64 << 20
#: divsufsort's 32-bit suffix array.
MAX_OLD_LENGTH = (1 << 31) - 2
_SAMPLE = 256 << 10
#: Streams up to this size try every LZMA2 variant at full strength (the filter by sample).
_FULL_TRIALS = 2 << 20
#: Threads for independent LZMA2 compressions (liblzma runs without the GIL).
_WORKERS = max(1, min(4, os.cpu_count() or 1))
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


#: A plan: yields batches of independent compressions, receives their outputs, returns.
_Job = tuple[bytes, Filter, int, int, int]  # _compress's arguments
_Plan = Generator[list[_Job], list[bytes], Any]


def _best_plan(
    data: bytes, dict_size: int, filters: Sequence[Filter] = (Filter.NONE,)
) -> Generator[list[_Job], list[bytes], tuple[Filter, bytes]]:
    """The smallest encoding over branch filters x LZMA2 variants (by sample if large)."""
    if not data:
        return Filter.NONE, b""
    variants = range(len(_VARIANTS))
    if len(data) <= _SAMPLE:
        keys = [(f, v) for f in filters for v in variants]
        outputs = yield [(data, f, dict_size, v, _PRESET) for f, v in keys]
        options = [(f, out) for (f, _v), out in zip(keys, outputs, strict=True)]
        return min(options, key=lambda o: (len(o[1]), o[0]))
    sample = data[:_SAMPLE]
    sizes = yield [(sample, f, dict_size, 0, 6) for f in filters]
    flt = min(zip(filters, map(len, sizes), strict=True), key=lambda o: (o[1], o[0]))[0]
    if len(data) <= _FULL_TRIALS:  # a sample misjudges the variants by ~0.7% on the .so
        outputs = yield [(data, flt, dict_size, v, _PRESET) for v in variants]
        return flt, min(outputs, key=len)
    variant = 0
    if len(variants) > 1:
        trials = dict.fromkeys(variants, -1)
        trials[0] = len(sizes[list(filters).index(flt)])  # already known
        rest = [v for v in variants if v]
        outputs = yield [(sample, flt, dict_size, v, 6) for v in rest]
        trials.update(zip(rest, map(len, outputs), strict=True))
        variant = min(variants, key=lambda v: (trials[v], v))
    (out,) = yield [(data, flt, dict_size, variant, _PRESET)]
    return flt, out


def _together(plans: Sequence[_Plan]) -> Generator[list[_Job], list[bytes], list[Any]]:
    """One plan of several: their batches in lockstep, as one batch per step."""
    results: list[Any] = [None] * len(plans)
    batches: dict[int, list[_Job]] = {}
    sent: dict[int, list[bytes] | None] = dict.fromkeys(range(len(plans)))
    while sent:
        for index, outputs in sent.items():
            try:
                batches[index] = plans[index].send(outputs)  # type: ignore[arg-type]
            except StopIteration as stop:
                results[index] = stop.value
        if not batches:
            break
        outputs = yield [job for batch in batches.values() for job in batch]
        sent, start = {}, 0
        for index, batch in batches.items():
            sent[index] = outputs[start : start + len(batch)]
            start += len(batch)
        batches = {}
    return results


def _run_plans(pool: ThreadPoolExecutor, plans: Sequence[_Plan]) -> list[Any]:
    """Run the plans' compressions on the pool, each batch as soon as the plan asks for it.

    Earlier plans' batches are queued first: put the longest plan first.
    """
    results: list[Any] = [None] * len(plans)
    pending: dict[int, list[Future[bytes]]] = {}

    def advance(index: int, outputs: list[bytes] | None) -> None:
        try:
            batch = plans[index].send(outputs)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[index] = stop.value
            return
        pending[index] = [pool.submit(_compress, *job) for job in batch]

    for index in range(len(plans)):
        advance(index, None)
    while pending:
        running = [f for batch in pending.values() for f in batch if not f.done()]
        wait(running, return_when=FIRST_COMPLETED)
        for index, batch in list(pending.items()):
            if all(f.done() for f in batch):
                del pending[index]
                advance(index, [f.result() for f in batch])
    return results


#: Periodic runs (period 1 to 4) at least this long are not matched but sent as extra bytes.
_MIN_RUN = 1024
_MAX_PERIOD = 4
_MAX_RUN_SEARCHES = 64
_NONZERO = re.compile(rb"[^\x00]")
_ZERO_BLOCK = bytes(1 << 16)


def _zeros_end(data: bytes, pos: int) -> int:
    """Where the zeros starting at ``pos`` end (galloping memcmp, then a short regex scan)."""
    step = 1 << 10
    while data[pos : pos + step] == _ZERO_BLOCK[:step] and pos + step <= len(data):
        pos += step
        step = min(step * 2, len(_ZERO_BLOCK))
    nonzero = _NONZERO.search(data, pos, pos + step)
    return nonzero.start() if nonzero else min(pos + step, len(data))


def _stretches(data: bytes, period: int, min_len: int) -> Iterator[tuple[int, int]]:
    """Maximal stretches ``[i, j)`` of ``data[k] == data[k + period]``, at least ``min_len`` long.

    They are the stretches of zeros in ``data[period:] XOR data[:-period]``: one big-integer
    XOR and a few ``find`` calls, linear time.
    """
    rest = len(data) - period
    if rest < min_len:
        return
    xored = (
        int.from_bytes(data[period:], "little") ^ int.from_bytes(data[:rest], "little")
    ).to_bytes(rest, "little")
    probe = _ZERO_BLOCK[:min_len]
    pos = 0
    while (at := xored.find(probe, pos)) >= 0:
        pos = _zeros_end(xored, at + min_len)
        yield at, pos


#: Every period of 1 to _MAX_PERIOD divides it.
_COMMON_PERIOD = 12


def _runs(data: bytes) -> list[tuple[int, int]]:
    """Disjoint, sorted spans of ``data`` that repeat with a period of 1 to 4 bytes.

    A run of period p is also one of period 12 (a multiple of every p), so one scan for
    period 12 finds the regions that can hold runs and only those are scanned per period
    (a backreferencing regex took 11 s per 44 MiB, four scans of everything 0.5 s).
    """
    spans: list[tuple[int, int]] = []
    if len(data) < _MIN_RUN:
        return spans
    # a stretch of period p and length L >= _MIN_RUN - p is one of period 12 and length
    # L - 12 + p >= _MIN_RUN - 12, inside [start, end + 12) of a period-12 stretch
    for start, end in _stretches(data, _COMMON_PERIOD, _MIN_RUN - _COMMON_PERIOD):
        region = data[start : end + _COMMON_PERIOD]
        periods = range(1, _MAX_PERIOD + 1)
        if any(region[p:] == region[:-p] for p in periods):  # one run (memcmp): it holds all
            spans.append((start, end + _COMMON_PERIOD))
            continue
        for period in periods:
            for at, stop in _stretches(region, period, _MIN_RUN - period):
                spans.append((start + at, start + stop + period))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


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


def _detools_extension(name: str) -> Any:
    """One of detools' C extensions, loaded without running its package's ``__init__``.

    Why: that imports detools' whole Python side (elftools, humanfriendly, its
    compressors), ~50 ms of a ~250 ms ``delta create`` of a firmware image; only the
    suffix sort and the matcher are used here.
    """
    import importlib.machinery
    import importlib.util

    package = importlib.util.find_spec("detools")
    for folder in (package and package.submodule_search_locations) or ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader(f"detools.{name}", path)
                spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
                if spec is not None:
                    module = importlib.util.module_from_spec(spec)
                    loader.exec_module(module)
                    return module
    return importlib.import_module(f"detools.{name}")  # pragma: no cover - unusual layouts


class _Matcher:
    """The whole old image and its suffix array, built once."""

    def __init__(self, old: bytes | mmap.mmap) -> None:
        self._bsdiff = _detools_extension("bsdiff")
        divsufsort = _detools_extension("suffix_array").divsufsort
        self.old = old
        self._run_cache: dict[bytes, tuple[int | None, int]] = {}  # unit -> (at, length)
        self._searches = 0
        self._stack = contextlib.ExitStack()
        size = 4 * (len(old) + 1)
        if len(old) > HEAP_LIMIT:
            backing = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
            backing.truncate(size)
            self.sa: bytearray | mmap.mmap = self._stack.enter_context(
                mmap.mmap(backing.fileno(), size)
            )
        else:  # anonymous pages, zeroed by the kernel as divsufsort touches them (no memset)
            self.sa = self._stack.enter_context(mmap.mmap(-1, size))
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
        key = run[:8]  # a periodic run: its first bytes name its unit (and phase)
        found, length = self._run_cache.get(key, (None, 0))
        if found is not None and len(run) <= length:
            return found if old[found : found + len(run)] == run else None
        if found is None and length and len(run) >= length:
            return None  # a shorter run like it was not in the old image
        if self._searches >= _MAX_RUN_SEARCHES:  # each search scans the old image
            return None
        self._searches += 1
        at = old.find(run)
        if at >= 0:
            self._run_cache[key] = (at, len(run))
            return at
        if found is None:
            self._run_cache[key] = (None, len(run))
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


def _chunks(payload: bytes | memoryview | mmap.mmap, size: int) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield bytes(payload[start : start + size])


@dataclass
class _Streams:
    """The three raw streams of the whole container, built chunk by chunk."""

    control: list[tuple[int, int, int]]
    diff_plain: list[bytes] | None  # dropped (None) when it grows past _PLAIN_DIFF_LIMIT
    diff_runs: dict[int, list[bytes]]  # zero-run coded, per shortest run coded as a run
    extra: list[bytes]
    plain_size: int = 0
    old_pos: int = 0  # where the old position stands after the last triple


#: Zero runs at least this long are coded as runs in the candidate zero-run diff streams.
ZERO_RUN_MINIMA = (2, 8)


def _zero_run_lists() -> dict[int, list[bytes]]:
    return {k: [] for k in ZERO_RUN_MINIMA}


#: The plain diff stream is kept (to compare with zero-run coding) while it is this small.
_PLAIN_DIFF_LIMIT = 64 << 20


#: A match shorter than this that the old position jumps to (and back from) costs more in
#: control bytes than its bytes cost as extra: it is folded into the previous step's extra.
SHORT_MATCH = 12


def _chunk_steps(
    matcher: _Matcher, new: bytes
) -> tuple[list[tuple[int, int, int]], list[bytes], list[bytes]]:
    """The chunk as bsdiff steps: control triples, diff pieces and extra pieces.

    bsdiff leaves many tiny matches far away in the old image (1 to 8 bytes,
    jumping megabytes there and back) and consecutive adds that run on (where
    a periodic run was cut out): both are merged into their previous step.
    """
    steps: list[list[Any]] = []  # [add, copy, seek, diff pieces, extra pieces]
    pos = 0  # in the new chunk
    for diff, extra, seek in matcher.triples(new):
        add, copy = len(diff), len(extra)
        if steps:
            prev = steps[-1]
            if not add and not copy:
                prev[2] += seek
                continue
            if prev[1] == 0 and prev[2] == 0:  # the add runs on
                prev[0] += add
                prev[1], prev[2] = copy, seek
                prev[3].append(diff)
                prev[4] = [extra]
                pos += add + copy
                continue
            if add < SHORT_MATCH and prev[2]:  # a short match far away: send it as extra
                prev[1] += add + copy
                prev[2] += add + seek
                prev[4] += [new[pos : pos + add], extra]
                pos += add + copy
                continue
        steps.append([add, copy, seek, [diff], [extra]])
        pos += add + copy
    control = [(a, c, s) for a, c, s, _d, _e in steps]
    return control, [b"".join(d) for *_s, d, _e in steps], [b"".join(e) for *_s, e in steps]


def _literal_is_smaller(new: bytes, diff: bytes, extra: bytes) -> bool:
    """Whether the chunk as one copy beats its delta (zlib level 1 as the judge: fast)."""
    unmatched = len(extra) + len(diff) - diff.count(0)
    if unmatched <= LITERAL_PROBE * len(new):
        return False
    delta = len(zlib.compress(encode_zero_runs(diff), 1)) + len(zlib.compress(extra, 1))
    return len(zlib.compress(new, 1)) < delta


def _add_chunk(streams: _Streams, new: bytes, matcher: _Matcher | None) -> bool:
    """Append the chunk's steps to the streams; returns whether it went in as a literal."""
    literal = matcher is None
    if matcher is not None:
        control, diffs, extras = _chunk_steps(matcher, new)
        diff, extra = b"".join(diffs), b"".join(extras)
        literal = _literal_is_smaller(new, diff, extra)
    if literal:
        control, diff, extra = [(0, len(new), 0)], b"", new
    # the chunk's steps start at old position 0; the old position carries over from the
    # previous chunk, so its last seek takes us there (and to a first pure seek's target)
    if streams.control:
        first_seek = 0
        if control and not control[0][0] and not control[0][1]:
            first_seek = control.pop(0)[2]
        add, copy, seek = streams.control[-1]
        streams.control[-1] = (add, copy, seek - streams.old_pos + first_seek)
        streams.old_pos = first_seek
    streams.control += control
    streams.old_pos += sum(add + seek for add, _copy, seek in control)
    for min_run, coded in streams.diff_runs.items():
        coded.append(encode_zero_runs(diff, min_run))
    streams.extra.append(extra)
    if streams.diff_plain is not None:
        streams.diff_plain.append(diff)
        streams.plain_size += len(diff)
        if streams.plain_size > _PLAIN_DIFF_LIMIT:
            streams.diff_plain = None
    return literal


def _dict_log(chunk_size: int, *raw_sizes: int) -> int:
    """The smallest dictionary that holds the largest stream, at most one chunk."""
    need = max((*raw_sizes, 1)) - 1
    return min(max(need.bit_length(), MIN_DICT_LOG), max_dict_log(chunk_size))


def _encode_streams(
    streams: _Streams, chunk_size: int, filters: Sequence[Filter], full: bool
) -> tuple[int, Filter, DiffCoding, list[bytes], list[bytes]]:
    """Compress the three streams.

    Returns (dict log2, extra filter, diff coding, compressed streams, raw streams).
    """
    extra = b"".join(streams.extra)
    runs = {k: b"".join(v) for k, v in streams.diff_runs.items()} if not full else {}
    # a zero-run coded diff holds every nonzero byte: if it is small, so is the number of
    # nonzero bytes, and the plain diff cannot be a candidate (below): no need to join it
    plain = None
    dense = not runs or min(map(len, runs.values())) > streams.plain_size // 16
    if streams.diff_plain is not None and not full and dense:
        plain = b"".join(streams.diff_plain)
    triples = b"".join(encode_triple(*t) for t in streams.control)
    plain_size = streams.plain_size if streams.diff_plain is not None and not full else 0
    dict_log = _dict_log(chunk_size, len(triples), *map(len, runs.values()), len(extra), plain_size)
    dict_size = 1 << dict_log
    # candidates: zero runs (each shortest run), plain unless the diff is mostly zeros
    candidates: dict[tuple[DiffCoding, int], bytes] = {
        (DiffCoding.ZERO_RUNS, k): v for k, v in runs.items()
    }
    if plain is not None and len(plain) - plain.count(0) > len(plain) // 16:
        candidates[DiffCoding.PLAIN, 0] = plain
    # liblzma releases the GIL: the independent compressions run on all cores, the diff
    # stream's (the longest chain) queued first
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:

        def diff_plan() -> _Plan:
            nonlocal candidates
            if len(candidates) > 1 and plain is not None and len(plain) > 2 * _SAMPLE:
                sample = plain[:_SAMPLE]  # decide on a sample of the diff
                keys = list(candidates)
                data = [
                    sample if k[0] is DiffCoding.PLAIN else encode_zero_runs(sample, k[1])
                    for k in keys
                ]
                outputs = yield [(d, Filter.NONE, dict_size, 0, _PRESET) for d in data]
                sizes = dict(zip(keys, map(len, outputs), strict=True))
                best = min(keys, key=lambda k: (sizes[k], k))
                candidates = {best: candidates[best]}
            if not any(runs.values()):
                return DiffCoding.PLAIN, b"", b""  # nothing reads the old image
            plans = [_best_plan(data, dict_size) for data in candidates.values()]
            results = yield from _together(plans)
            options = [
                (k[0], out, raw)
                for (k, raw), (_f, out) in zip(candidates.items(), results, strict=True)
            ]
            return min(options, key=lambda o: (len(o[1]), o[0]))

        (coding, diff_stream, diff_raw), (_f, control), (flt, extra_stream) = _run_plans(
            pool,
            [diff_plan(), _best_plan(triples, dict_size), _best_plan(extra, dict_size, filters)],
        )
    return dict_log, flt, coding, [control, diff_stream, extra_stream], [triples, diff_raw, extra]


def _join(raw: Sequence[bytes], chunk_size: int) -> tuple[int, bytes] | None:
    """Control, diff and extra bytes as one LZMA2 stream: (dict log2, stream), or None."""
    data = b"".join(raw)
    dict_log = _dict_log(chunk_size, len(data))
    if len(data) > MAX_PREDICTED or 1 << dict_log > MAX_PREDICTED:
        return None
    variants = (_compress(data, Filter.NONE, 1 << dict_log, v) for v in range(len(_VARIANTS)))
    return dict_log, min(variants, key=len)


def _predicted_diff(
    old: bytes | mmap.mmap,
    new: bytes,
    control: Sequence[tuple[int, int, int]],
    arch: Arch,
    phase: int,
    absolute: Absolute | None = None,
) -> bytes:
    """The chunk's diff against the predictor's view of the old image (one chunk, old at 0)."""
    alignment = Alignment.from_triples(control)
    view = bytes(old)
    pieces = []
    new_pos = old_pos = 0
    for add, copy, seek in control:
        if add:
            guess = predict(view, old_pos, new_pos, add, arch, phase, alignment, absolute)
            pieces.append(sub_bytes(new[new_pos : new_pos + add], guess))
        new_pos += add + copy
        old_pos += add + seek
    return b"".join(pieces)


def _estimate(diff: bytes) -> int:
    """A quick size estimate of a diff stream (zlib: fast, and it ranks diffs like LZMA2)."""
    return len(zlib.compress(diff, 6))


#: The predictors a delta of a small image tries (by a quick estimate of its diff stream).
PREDICTORS = (Arch.THUMB2, Arch.X86_64)


def _predict_streams(
    streams: _Streams,
    old: bytes | mmap.mmap,
    new: bytes,
    candidates: Sequence[Arch],
    forced: Arch | None,
    load_address: int | None = None,
) -> tuple[Arch, int, Absolute | None]:
    """Replace the single chunk's diff by the best predictor's, if one beats plain bsdiff.

    The architecture is chosen first; then, if the old payload is an ELF, whether its
    code segment's absolute pointers are predicted too.
    """
    if len(streams.control) > MAX_SEGMENTS or forced is Arch.NONE:
        return Arch.NONE, 0, None
    head = bytes(old[: 16 + (1 << 20)])
    offset = payload_offset(head)
    phase = offset & 3
    best, best_diff, best_size = Arch.NONE, b"", -1
    if forced is None:
        plain = (
            b"".join(streams.diff_plain)
            if streams.diff_plain is not None
            else _predicted_diff(old, new, streams.control, Arch.NONE, phase)
        )
        best, best_diff, best_size = Arch.NONE, plain, _estimate(plain)
    for arch in candidates:
        diff = _predicted_diff(old, new, streams.control, arch, phase)
        size = _estimate(diff)
        if best_size < 0 or size < best_size:
            best, best_diff, best_size = arch, diff, size
    if best is Arch.NONE:
        return Arch.NONE, 0, None
    if load_address is not None:
        absolute = raw_range(load_address, len(old) - offset, offset)
    else:
        absolute = elf_code_range(bytes(old[offset : offset + (1 << 12)]), offset)
    if absolute is not None:
        diff = _predicted_diff(old, new, streams.control, best, phase, absolute)
        size = _estimate(diff)
        if size < best_size:
            best_diff, best_size = diff, size
        else:
            absolute = None
    streams.diff_runs = {k: [encode_zero_runs(best_diff, k)] for k in ZERO_RUN_MINIMA}
    streams.diff_plain = [best_diff]
    streams.plain_size = len(best_diff)
    return best, phase, absolute


#: zstd's strongest level (the frame's window is set to cover old image and new payload).
ZSTD_LEVEL = 22


def _zstd_frame(
    old: bytes | mmap.mmap, payload: bytes | memoryview | mmap.mmap, chunk_size: int, level: int
) -> tuple[int, bytes]:
    """The payload as one zstd frame, the old image its dictionary: (window log2, frame)."""
    import zstandard

    need = (len(old) + len(payload) - 1).bit_length()
    window_log = min(max(need, MIN_DICT_LOG), max_dict_log(chunk_size))
    dictionary = zstandard.ZstdCompressionDict(bytes(old), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=len(payload),
        dict_size=len(old),
        window_log=window_log,
        write_checksum=False,
        write_content_size=False,
        write_dict_id=False,
    )
    compressor = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
    return window_log, compressor.compress(bytes(payload))


def create_container(
    old: bytes | mmap.mmap,
    new_signed: bytes,
    new_payload: bytes | memoryview | mmap.mmap,
    new_signatures: bytes,
    *,
    zdict: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    filters: Sequence[Filter] = tuple(Filter),
    fallback_ratio: float = FULL_FALLBACK_RATIO,
    progress: Callable[[int, int], None] | None = None,
    zstd: bool | None = None,
    predictor: Arch | None = None,
    load_address: int | None = None,
) -> tuple[list[bytes], DeltaStats]:
    """Encode the container; returns its parts (to write in order) and what was decided.

    ``old`` is the whole old image file; the new image is given as its three
    parts (signed header, payload, signature block) so they are carried verbatim;
    ``zdict`` is :func:`~otaguard.delta.format.header_dictionary` of the envelope.
    ``zstd``: None lets the smaller of bsdiff and zstd win (zstd only for images that fit
    one chunk together), True forces zstd where it is allowed, False never uses it.
    ``predictor``: for such small images, None tries every pointer-aware predictor and
    keeps the best (or none), an ``Arch`` forces that one (``Arch.NONE``: plain bsdiff).
    ``load_address``: where a raw (non-ELF) old payload is loaded, so that its 32-bit
    pointers can be predicted too (an ELF payload's own headers say it).
    """
    if len(old) > MAX_OLD_LENGTH:
        raise ValueError("the old image is larger than 2 GiB")
    count = chunk_count_for(len(new_payload), chunk_size)
    table: list[bytes] = []
    streams = _Streams([], [], _zero_run_lists(), [])
    literal_chunks = 0
    matcher = _Matcher(old)
    try:
        for index, chunk in enumerate(_chunks(new_payload, chunk_size)):
            literal_chunks += _add_chunk(streams, chunk, matcher)
            if index + 1 < count:
                table.append(hashlib.sha256(chunk).digest()[:CHUNK_HASH])
            if progress is not None:
                progress(index + 1, count)
    finally:
        matcher.close()
    small = bool(old) and len(old) + len(new_payload) <= chunk_size
    tiny = small and len(old) + len(new_payload) <= MAX_PREDICTED  # predictor, joined streams
    phase = 0
    if tiny and not literal_chunks:
        candidates = PREDICTORS if predictor is None else (predictor,)
        chosen, phase, absolute = _predict_streams(
            streams, old, bytes(new_payload), candidates, predictor, load_address
        )
    else:
        chosen, absolute = Arch.NONE, None

    def container(
        streams: _Streams, flags: int, zstd: tuple[int, bytes] | None = None
    ) -> list[bytes]:
        lengths: list[int] | None = None
        if zstd is None:
            dict_log, flt, coding, encoded, raw = _encode_streams(
                streams, chunk_size, filters, bool(flags & FLAG_FULL)
            )
            joined = _join(raw, chunk_size) if not flags and tiny else None
            if joined is not None and len(joined[1]) < sum(map(len, encoded)):
                flags, flt, (dict_log, stream) = FLAG_JOINED, Filter.NONE, joined
                encoded = [stream]
                lengths = [len(raw[0]), len(raw[1]), len(stream)]
        else:
            dict_log, flt, coding, encoded = (
                zstd[0],
                Filter.NONE,
                DiffCoding.PLAIN,
                [b"", b"", zstd[1]],
            )
        plain = not flags & (FLAG_FULL | FLAG_ZSTD)  # the predictor applies
        control_length, diff_length, extra_length = lengths or [len(e) for e in encoded]
        head = DeltaHeader(
            flags,
            chunk_size,
            len(old),
            bytes(32),
            parse_protected(new_signed).payload_digest,
            flt,
            coding,
            dict_log,
            new_signed,
            new_signatures,
            control_length,
            diff_length,
            extra_length,
            len(new_payload),
            chosen if plain else Arch.NONE,
            phase if plain else 0,
            absolute if plain else None,
        )
        return [encode_header(head, zdict, table), *encoded]

    parts = container(streams, 0)
    if zstd is not False and small:
        level = ZSTD_LEVEL
        if zstd is None and len(_zstd_frame(old, new_payload, chunk_size, 3)[1]) > 1.5 * sum(
            map(len, parts)
        ):
            level = 0  # a quick probe says it cannot win
        candidate = (
            container(streams, FLAG_ZSTD, _zstd_frame(old, new_payload, chunk_size, level))
            if level
            else parts
        )
        if zstd or sum(map(len, candidate)) < sum(map(len, parts)):
            parts, literal_chunks = candidate, 0
    delta_bytes = sum(map(len, parts))
    # zlib level 1 compresses at most ~1032:1, so below this bound no estimate is needed
    full_bytes = len(new_payload) // 1032
    full = False
    if count and delta_bytes > fallback_ratio * full_bytes:
        full_bytes = sum(len(zlib.compress(c, 1)) for c in _chunks(new_payload, chunk_size))
        if delta_bytes > fallback_ratio * full_bytes or literal_chunks == count:
            literals = _Streams([], None, _zero_run_lists(), [])
            for chunk in _chunks(new_payload, chunk_size):
                _add_chunk(literals, chunk, None)
            parts = container(literals, FLAG_FULL)
            full, literal_chunks = True, count
            full_bytes = sum(map(len, parts))
    stats = DeltaStats(
        chunks=count,
        literal_chunks=literal_chunks,
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
