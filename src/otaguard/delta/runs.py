"""Long periodic runs (zeroed blocks, erased flash) in a new chunk, found in linear time.

bsdiff's approximate matching is quadratic on them (7 s for 256 KiB of zeros), so
the matcher cuts them out of the chunk and takes them from the old image where it
has them, or sends them as extra bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: Periodic runs (period 1 to 4) at least this long are not matched but sent as extra bytes.
_MIN_RUN = 1024
_MAX_PERIOD = 4
MAX_RUN_SEARCHES = 64
#: A periodic run missing at the old position is first looked for this close to it.
RUN_WINDOW = 64 << 10
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


def periodic_runs(data: bytes) -> list[tuple[int, int]]:
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


def periodic_pieces(run: bytes) -> list[bytes]:
    """A span of ``_runs`` cut where its unit changes (zeros, then a bitmap's 0xff).

    Overlapping runs of different units are merged into one span; as a whole the old
    image rarely has it, while it has each piece (near the old position, often).
    """
    pieces = []
    while run:
        ends = [_period_end(run, p) for p in range(1, _MAX_PERIOD + 1)]
        end = max(ends)
        pieces.append(run[:end])
        run = run[end:]
    return pieces


def _period_end(data: bytes, period: int) -> int:
    """How far ``data`` repeats with ``period`` from its start (galloping memcmp)."""
    n = len(data)
    if n <= period:
        return n
    good, step = period, 64
    while good < n and data[good : good + step] == data[good - period : good - period + step]:
        good += step
        step *= 2
    step = min(step, n - good)
    while step > 1:  # the mismatch lies within data[good : good + step]
        half = step // 2
        if data[good : good + half] == data[good - period : good - period + half]:
            good += half
            step -= half
        else:
            step = half
    if good < n and data[good] == data[good - period]:
        good += 1
    return min(good, n)
