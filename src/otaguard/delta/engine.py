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

import hashlib
import mmap
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from otaguard.delta.apply import sub_bytes
from otaguard.delta.compress import (
    PRESET,
    SAMPLE,
    VARIANTS,
    WORKERS,
    Plan,
    best_plan,
    compress,
    run_plans,
    together,
)
from otaguard.delta.format import (
    CHUNK_HASH,
    DEFAULT_CHUNK_SIZE,
    FLAG_FULL,
    FLAG_JOINED,
    FLAG_REPEAT,
    FLAG_ZSTD,
    MAX_PREDICTED,
    MIN_DICT_LOG,
    DeltaHeader,
    DiffCoding,
    Filter,
    chunk_count_for,
    encode_header,
    encode_triple,
    encode_triples,
    encode_zero_runs,
    max_dict_log,
)
from otaguard.delta.matcher import Matcher
from otaguard.delta.predict import (
    MAX_SEGMENTS,
    Absolute,
    Alignment,
    Arch,
    elf_arch,
    elf_code_range,
    guess_load_addresses,
    predict,
    raw_range,
)
from otaguard.delta.steps import chunk_steps, xor_diff
from otaguard.image import sniff
from otaguard.image.envelope_format import parse_protected

#: ``delta create`` falls back to a compressed full image above this ratio (issue 6).
FULL_FALLBACK_RATIO = 0.70
#: A chunk whose unmatched bytes exceed this share of it is also judged as is (zlib level
#: 1 sizes of both: fast); below it sending it as is cannot plausibly win.
LITERAL_PROBE = 0.20
#: divsufsort's 32-bit suffix array.
MAX_OLD_LENGTH = (1 << 31) - 2


@dataclass(frozen=True)
class DeltaStats:
    chunks: int
    literal_chunks: int
    full_fallback: bool
    delta_bytes: int  # the container with every chunk as a delta
    full_bytes: int  # the container, all literal (estimated unless it fell back)
    container_bytes: int  # what was emitted


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
    # the diff as new XOR old, zero-run coded (ZERO_RUNS_XOR), per shortest run
    xor_runs: dict[int, list[bytes]] = field(default_factory=dict)


#: Zero runs at least this long are coded as runs in the candidate zero-run diff streams.
ZERO_RUN_MINIMA = (2, 8)


def _zero_run_lists() -> dict[int, list[bytes]]:
    return {k: [] for k in ZERO_RUN_MINIMA}


#: The plain diff stream is kept (to compare with zero-run coding) while it is this small.
_PLAIN_DIFF_LIMIT = 64 << 20


def _literal_is_smaller(new: bytes, diff: bytes, extra: bytes) -> bool:
    """Whether the chunk as one copy beats its delta (zlib level 1 as the judge: fast)."""
    unmatched = len(extra) + len(diff) - diff.count(0)
    if unmatched <= LITERAL_PROBE * len(new):
        return False
    delta = len(zlib.compress(encode_zero_runs(diff), 1)) + len(zlib.compress(extra, 1))
    return len(zlib.compress(new, 1)) < delta


def _add_chunk(streams: _Streams, new: bytes, matcher: Matcher | None) -> bool:
    """Append the chunk's steps to the streams; returns whether it went in as a literal."""
    literal = matcher is None
    if matcher is not None:
        start = streams.old_pos if streams.control else 0  # where the old position stands
        control, diffs, extras = chunk_steps(matcher, new, start)
        diff, extra = b"".join(diffs), b"".join(extras)
        literal = _literal_is_smaller(new, diff, extra)
    if literal:
        control, diff, extra = [(0, len(new), 0)], b"", new
    xor = diff
    if matcher is not None and not literal and diff.count(0) != len(diff):
        xor = xor_diff(matcher.old, new, control)
    for min_run in ZERO_RUN_MINIMA:
        streams.xor_runs.setdefault(min_run, []).append(encode_zero_runs(xor, min_run))
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
    streams: _Streams,
    chunk_size: int,
    filters: Sequence[Filter],
    full: bool,
    old: bytes | mmap.mmap = b"",
) -> tuple[int, Filter, DiffCoding, list[bytes], list[bytes], int]:
    """Compress the three streams.

    Returns (dict log2, extra filter, diff coding, compressed streams, raw streams, and
    FLAG_REPEAT if the control stream uses it).
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
    repeated = encode_triples(
        streams.control, repeat=True, read_at=lambda at, n: bytes(old[at : at + n])
    )
    plain_size = streams.plain_size if streams.diff_plain is not None and not full else 0
    dict_log = _dict_log(
        chunk_size, len(triples), len(repeated), *map(len, runs.values()), len(extra), plain_size
    )
    dict_size = 1 << dict_log
    # candidates: zero runs (each shortest run), plain unless the diff is mostly zeros
    candidates: dict[tuple[DiffCoding, int], bytes] = {
        (DiffCoding.ZERO_RUNS, k): v for k, v in runs.items()
    }
    if plain is not None and len(plain) - plain.count(0) > len(plain) // 16:
        candidates[DiffCoding.PLAIN, 0] = plain
    if runs and streams.xor_runs and (plain is None or len(plain) <= 2 * SAMPLE):
        # XOR: a checksum (CRC) changed by the same edit changes by the same XOR pattern
        for k, v in streams.xor_runs.items():
            candidates[DiffCoding.ZERO_RUNS_XOR, k] = b"".join(v)
    # liblzma releases the GIL: the independent compressions run on all cores, the diff
    # stream's (the longest chain) queued first
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:

        def diff_plan() -> Plan:
            nonlocal candidates
            if len(candidates) > 1 and plain is not None and len(plain) > 2 * SAMPLE:
                sample = plain[:SAMPLE]  # decide on a sample of the diff
                keys = list(candidates)
                data = [
                    sample if k[0] is DiffCoding.PLAIN else encode_zero_runs(sample, k[1])
                    for k in keys
                ]
                outputs = yield [(d, Filter.NONE, dict_size, 0, PRESET) for d in data]
                sizes = dict(zip(keys, map(len, outputs), strict=True))
                best = min(keys, key=lambda k: (sizes[k], k))
                candidates = {best: candidates[best]}
            if not any(runs.values()):
                return DiffCoding.PLAIN, b"", b""  # nothing reads the old image
            plans = [best_plan(data, dict_size) for data in candidates.values()]
            results = yield from together(plans)
            options = [
                (k[0], out, raw)
                for (k, raw), (_f, out) in zip(candidates.items(), results, strict=True)
            ]
            return min(options, key=lambda o: (len(o[1]), o[0]))

        (coding, diff_stream, diff_raw), (_f, control), (flt, extra_stream), (_g, again) = (
            run_plans(
                pool,
                [
                    diff_plan(),
                    best_plan(triples, dict_size),
                    best_plan(extra, dict_size, filters),
                    best_plan(repeated, dict_size),
                ],
            )
        )
    repeat = 0
    if len(again) < len(control):  # copy and seek often repeat (an insertion, many times)
        control, triples, repeat = again, repeated, FLAG_REPEAT
    encoded, raw = [control, diff_stream, extra_stream], [triples, diff_raw, extra]
    return dict_log, flt, coding, encoded, raw, repeat


#: Streams (compressed) at most this large are also tried joined (FLAG_JOINED).
JOIN_LIMIT = 64 << 10


def _join(raw: Sequence[bytes], chunk_size: int) -> tuple[int, bytes] | None:
    """Control, diff and extra bytes as one LZMA2 stream: (dict log2, stream), or None."""
    data = b"".join(raw)
    dict_log = _dict_log(chunk_size, len(data))
    if len(data) > MAX_PREDICTED or 1 << dict_log > MAX_PREDICTED:
        return None
    variants = (compress(data, Filter.NONE, 1 << dict_log, v) for v in range(len(VARIANTS)))
    return dict_log, min(variants, key=len)


def _predicted_diff(
    old: bytes,
    new: bytes,
    control: Sequence[tuple[int, int, int]],
    arch: Arch,
    phase: int,
    absolute: Absolute | None = None,
    alignment: Alignment | None = None,
) -> bytes:
    """The chunk's diff against the predictor's view of the old image (one chunk, old at 0).

    ``alignment``: the control's :class:`Alignment`, when the caller already has it.
    """
    alignment = alignment or Alignment.from_triples(control)
    pieces = []
    new_pos = old_pos = 0
    for add, copy, seek in control:
        if add:
            guess = predict(old, old_pos, new_pos, add, arch, phase, alignment, absolute)
            pieces.append(sub_bytes(new[new_pos : new_pos + add], guess))
        new_pos += add + copy
        old_pos += add + seek
    return b"".join(pieces)


def _estimate(diff: bytes) -> int:
    """A quick size estimate of a diff stream (zlib: fast, and it ranks diffs like LZMA2)."""
    return len(zlib.compress(diff, 6))


def payload_offset(old: bytes) -> int:
    """Where the old image's payload starts, as its header says (0 if it is no image)."""
    found = sniff.layout(old[: sniff.LAYOUT_SIZE])
    return 0 if found is None else found.payload_offset


#: The predictors a delta of a small image tries (by a quick estimate of its diff stream).
PREDICTORS = (Arch.THUMB2, Arch.X86_64)


def _predict_streams(
    streams: _Streams,
    old: bytes | mmap.mmap,
    new: bytes,
    forced: Arch | None,
    load_address: int | None = None,
) -> tuple[Arch, int, Absolute | None]:
    """Replace the single chunk's diff by the best predictor's, if one beats plain bsdiff.

    The architecture is chosen first (``forced``, else the one an ELF's machine names, else
    each of PREDICTORS); then whether absolute pointers are predicted too: at the given load
    address, in an ELF's code segment, or at the addresses a raw payload's pointers suggest.
    """
    if len(streams.control) > MAX_SEGMENTS or forced is Arch.NONE:
        return Arch.NONE, 0, None
    view = bytes(old)  # at most 4 MiB here; copied once for every trial below
    alignment = Alignment.from_triples(streams.control)
    offset = payload_offset(view)
    phase = offset & 3
    machine = elf_arch(view[offset : offset + 20]) if forced is None else forced
    if machine is None:
        candidates: tuple[Arch, ...] = PREDICTORS
    else:  # an ELF names the code it holds (Arch.NONE: none of ours)
        candidates = () if machine is Arch.NONE else (machine,)

    def trial(arch: Arch, absolute: Absolute | None = None) -> bytes:
        return _predicted_diff(view, new, streams.control, arch, phase, absolute, alignment)

    best, best_diff, best_size = Arch.NONE, b"", -1
    if forced is None:
        plain = b"".join(streams.diff_plain) if streams.diff_plain is not None else trial(Arch.NONE)
        best, best_diff, best_size = Arch.NONE, plain, _estimate(plain)
    for arch in candidates:
        diff = trial(arch)
        size = _estimate(diff)
        if best_size < 0 or size < best_size:
            best, best_diff, best_size = arch, diff, size
    if best is Arch.NONE:
        return Arch.NONE, 0, None
    length = len(old) - offset
    if load_address is not None:
        ranges = [raw_range(load_address, length, offset)]
    else:
        ranges = [elf_code_range(view[offset : offset + (1 << 12)], offset)]
        if ranges[0] is None:  # raw firmware: its pointers say where it is loaded
            guesses = guess_load_addresses(view[offset:])
            ranges = [raw_range(base, length, offset) for base in guesses]
    absolute = None
    for candidate in filter(None, ranges):
        diff = trial(best, candidate)
        size = _estimate(diff)
        if size < best_size:
            best_diff, best_size, absolute = diff, size, candidate
    streams.diff_runs = {k: [encode_zero_runs(best_diff, k)] for k in ZERO_RUN_MINIMA}
    streams.xor_runs = {}  # the predictor's view is added to, not XORed
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


@dataclass(frozen=True)
class _Layout:
    """What every candidate container of one delta shares: the images, the chunking, the
    chunk table and the predictor chosen (step 2 of :func:`create_container`)."""

    old: bytes | mmap.mmap
    new_signed: bytes
    new_payload: bytes | memoryview | mmap.mmap
    new_signatures: bytes
    zdict: bytes
    chunk_size: int
    filters: Sequence[Filter]
    join: bool
    table: list[bytes]
    predictor: Arch = Arch.NONE
    phase: int = 0
    absolute: Absolute | None = None

    def container(
        self, streams: _Streams, flags: int, zstd: tuple[int, bytes] | None = None
    ) -> list[bytes]:
        """One candidate container: its header, then its streams (``zstd``: the one frame)."""
        lengths: list[int] | None = None
        if zstd is None:
            dict_log, flt, coding, encoded, raw, repeat = _encode_streams(
                streams, self.chunk_size, self.filters, bool(flags & FLAG_FULL), self.old
            )
            # joining saves a fixed ~30 bytes of framing: tried only where that can matter
            small_streams = sum(map(len, encoded)) <= JOIN_LIMIT
            joined = (
                _join(raw, self.chunk_size) if self.join and not flags and small_streams else None
            )
            if joined is not None and len(joined[1]) < sum(map(len, encoded)):
                flags, flt, (dict_log, stream) = FLAG_JOINED, Filter.NONE, joined
                encoded = [stream]
                lengths = [len(raw[0]), len(raw[1]), len(stream)]
        else:
            dict_log, flt, coding, encoded, repeat = (
                zstd[0],
                Filter.NONE,
                DiffCoding.PLAIN,
                [b"", b"", zstd[1]],
                0,
            )
        plain = not flags & (FLAG_FULL | FLAG_ZSTD)  # the predictor applies
        control_length, diff_length, extra_length = lengths or [len(e) for e in encoded]
        head = DeltaHeader(
            flags=flags | repeat,
            chunk_size=self.chunk_size,
            base_length=len(self.old),
            base_sha256=bytes(32),  # the envelope's DELTA_BASE, not part of the container
            payload_digest=parse_protected(self.new_signed).payload_digest,
            extra_filter=flt,
            diff_coding=coding,
            dict_log=dict_log,
            new_signed=self.new_signed,
            new_signatures=self.new_signatures,
            control_length=control_length,
            diff_length=diff_length,
            extra_length=extra_length,
            payload_length=len(self.new_payload),
            predictor=self.predictor if plain else Arch.NONE,
            phase=self.phase if plain else 0,
            absolute=self.absolute if plain else None,
        )
        return [encode_header(head, self.zdict, self.table), *encoded]


def _match_chunks(
    old: bytes | mmap.mmap,
    new_payload: bytes | memoryview | mmap.mmap,
    chunk_size: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[_Streams, list[bytes], int]:
    """Step 1: every chunk matched against the whole old image.

    Returns the streams, the chunk table (every chunk's output hash but the last's) and
    how many chunks went in as they are.
    """
    count = chunk_count_for(len(new_payload), chunk_size)
    table: list[bytes] = []
    streams = _Streams([], [], _zero_run_lists(), [])
    literal_chunks = 0
    matcher = Matcher(old)
    try:
        for index, chunk in enumerate(_chunks(new_payload, chunk_size)):
            literal_chunks += _add_chunk(streams, chunk, matcher)
            if index + 1 < count:
                table.append(hashlib.sha256(chunk).digest()[:CHUNK_HASH])
            if progress is not None:
                progress(index + 1, count)
    finally:
        matcher.close()
    return streams, table, literal_chunks


def _zstd_if_smaller(
    layout: _Layout, streams: _Streams, parts: list[bytes], zstd: bool | None
) -> list[bytes] | None:
    """Step 4, small images only: the zstd container if it wins (or is forced), else None."""
    old, new_payload, chunk_size = layout.old, layout.new_payload, layout.chunk_size
    if zstd is None and len(_zstd_frame(old, new_payload, chunk_size, 3)[1]) > 1.5 * sum(
        map(len, parts)
    ):
        return None  # a quick probe says it cannot win
    frame = _zstd_frame(old, new_payload, chunk_size, ZSTD_LEVEL)
    candidate = layout.container(streams, FLAG_ZSTD, frame)
    if zstd or sum(map(len, candidate)) < sum(map(len, parts)):
        return candidate
    return None


def _full_image_if_smaller(
    layout: _Layout, delta_bytes: int, literal_chunks: int, fallback_ratio: float
) -> tuple[list[bytes] | None, int]:
    """Step 5: the compressed full image when the delta is not worth it (else None), and
    the full image's size as far as it was worked out (a bound, an estimate, or exact)."""
    count = chunk_count_for(len(layout.new_payload), layout.chunk_size)
    # zlib level 1 compresses at most ~1032:1, so below this bound no estimate is needed
    full_bytes = len(layout.new_payload) // 1032
    if not count or delta_bytes <= fallback_ratio * full_bytes:
        return None, full_bytes
    chunks = _chunks(layout.new_payload, layout.chunk_size)
    full_bytes = sum(len(zlib.compress(c, 1)) for c in chunks)
    if delta_bytes <= fallback_ratio * full_bytes and literal_chunks < count:
        return None, full_bytes
    literals = _Streams([], None, _zero_run_lists(), [])
    for chunk in _chunks(layout.new_payload, layout.chunk_size):
        _add_chunk(literals, chunk, None)
    parts = layout.container(literals, FLAG_FULL)
    return parts, sum(map(len, parts))


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
    join: bool = True,
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
    ``join``: False keeps the three streams apart even where one joined stream is smaller
    (for tools and tests that read them).

    The steps: (1) match every chunk; (2) for a small image, choose the predictor;
    (3) encode the streams; (4) for a small image, try zstd instead; (5) fall back to
    the compressed full image when the delta is larger than ``fallback_ratio`` of it.
    """
    if len(old) > MAX_OLD_LENGTH:
        raise ValueError("the old image is larger than 2 GiB")
    count = chunk_count_for(len(new_payload), chunk_size)
    streams, table, literal_chunks = _match_chunks(old, new_payload, chunk_size, progress)
    small = bool(old) and len(old) + len(new_payload) <= chunk_size
    tiny = small and len(old) + len(new_payload) <= MAX_PREDICTED  # the predictor applies
    chosen, phase, absolute = Arch.NONE, 0, None
    if tiny and not literal_chunks:
        chosen, phase, absolute = _predict_streams(
            streams, old, bytes(new_payload), predictor, load_address
        )
    layout = _Layout(
        old=old,
        new_signed=new_signed,
        new_payload=new_payload,
        new_signatures=new_signatures,
        zdict=zdict,
        chunk_size=chunk_size,
        filters=filters,
        join=join,
        table=table,
        predictor=chosen,
        phase=phase,
        absolute=absolute,
    )
    parts = layout.container(streams, 0)
    if zstd is not False and small:
        zstd_parts = _zstd_if_smaller(layout, streams, parts, zstd)
        if zstd_parts is not None:
            parts, literal_chunks = zstd_parts, 0
    delta_bytes = sum(map(len, parts))
    full, full_bytes = _full_image_if_smaller(layout, delta_bytes, literal_chunks, fallback_ratio)
    if full is not None:
        parts, literal_chunks = full, count
    stats = DeltaStats(
        chunks=count,
        literal_chunks=literal_chunks,
        full_fallback=full is not None,
        delta_bytes=delta_bytes,
        full_bytes=full_bytes,
        container_bytes=sum(map(len, parts)),
    )
    return parts, stats
