"""LZMA2 for the delta streams: the smallest encoding over filters and literal-context variants.

Each stream is compressed as raw LZMA2 at preset 9e; the literal-context variant
(lc/lp/pb) and the extra stream's branch filter are chosen by trying them -- at full
strength for streams up to 2 MiB, on a sample above. Plans are generators that yield
batches of independent compressions, so that several streams' trials share the
thread pool (liblzma releases the GIL).
"""

from __future__ import annotations

import lzma
import os
from collections.abc import Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from otaguard.delta.format import Filter, lzma_filters

SAMPLE = 256 << 10
#: Streams up to this size try every LZMA2 variant at full strength (the filter by sample).
FULL_TRIALS = 2 << 20
#: Threads for independent LZMA2 compressions (liblzma runs without the GIL).
WORKERS = max(1, min(4, os.cpu_count() or 1))
PRESET = 9 | lzma.PRESET_EXTREME

#: LZMA2 literal-context variants tried per stream (the decoder needs none of them); the
#: first DENSE_VARIANTS are the ones tried at full strength on streams above SAMPLE.
VARIANTS: tuple[dict[str, int], ...] = (
    {},
    {"lc": 0, "pb": 0},
    {"lc": 0, "lp": 1, "pb": 1},
    {"lc": 1, "pb": 0},
    {"lc": 2, "pb": 0},
)
DENSE_VARIANTS = 3


def compress(
    data: bytes, flt: Filter, dict_size: int, variant: int = 0, preset: int = PRESET
) -> bytes:
    if not data:
        return b""
    filters = lzma_filters(flt, dict_size, preset=preset, **VARIANTS[variant])
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


#: A plan: yields batches of independent compressions, receives their outputs, returns.
Job = tuple[bytes, Filter, int, int, int]  # compress's arguments
Plan = Generator[list[Job], list[bytes], Any]


def best_plan(
    data: bytes, dict_size: int, filters: Sequence[Filter] = (Filter.NONE,)
) -> Generator[list[Job], list[bytes], tuple[Filter, bytes]]:
    """The smallest encoding over branch filters x LZMA2 variants (by sample if large)."""
    if not data:
        return Filter.NONE, b""
    variants = range(len(VARIANTS))
    if len(data) <= SAMPLE:
        keys = [(f, v) for f in filters for v in variants]
        outputs = yield [(data, f, dict_size, v, PRESET) for f, v in keys]
        options = [(f, out) for (f, _v), out in zip(keys, outputs, strict=True)]
        return min(options, key=lambda o: (len(o[1]), o[0]))
    sample = data[:SAMPLE]
    sizes = yield [(sample, f, dict_size, 0, 6) for f in filters]
    flt = min(zip(filters, map(len, sizes), strict=True), key=lambda o: (o[1], o[0]))[0]
    if len(data) <= FULL_TRIALS:  # a sample misjudges the variants by ~0.7% on the .so
        dense = range(DENSE_VARIANTS)  # the others only ever won on small control streams
        outputs = yield [(data, flt, dict_size, v, PRESET) for v in dense]
        return flt, min(outputs, key=len)
    variant = 0
    if len(variants) > 1:
        trials = dict.fromkeys(variants, -1)
        trials[0] = len(sizes[list(filters).index(flt)])  # already known
        rest = [v for v in variants if v]
        outputs = yield [(sample, flt, dict_size, v, 6) for v in rest]
        trials.update(zip(rest, map(len, outputs), strict=True))
        variant = min(variants, key=lambda v: (trials[v], v))
    (out,) = yield [(data, flt, dict_size, variant, PRESET)]
    return flt, out


def together(plans: Sequence[Plan]) -> Generator[list[Job], list[bytes], list[Any]]:
    """One plan of several: their batches in lockstep, as one batch per step."""
    results: list[Any] = [None] * len(plans)
    batches: dict[int, list[Job]] = {}
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


def run_plans(pool: ThreadPoolExecutor, plans: Sequence[Plan]) -> list[Any]:
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
        pending[index] = [pool.submit(compress, *job) for job in batch]

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
