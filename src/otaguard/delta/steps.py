"""Cleaning bsdiff's steps: stray far matches, runs-on adds, short copies, repeated inserts."""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Any

from otaguard.delta.apply import sub_bytes, xor_bytes
from otaguard.delta.matcher import Matcher
from otaguard.delta.realign import Steps, realign

#: A match shorter than this that the old position jumps to (and back from) costs more in
#: control bytes than its bytes cost as extra: it is folded into the previous step's extra.
SHORT_MATCH = 12


def chunk_steps(matcher: Matcher, new: bytes, start: int = 0) -> Steps:
    """The chunk as bsdiff steps: control triples, diff pieces and extra pieces.

    bsdiff leaves many tiny matches far away in the old image (1 to 8 bytes,
    jumping megabytes there and back) and consecutive adds that run on (where
    a periodic run was cut out): both are merged into their previous step.
    """
    steps: list[list[Any]] = []  # [add, copy, seek, diff pieces, extra pieces]
    pos = 0  # in the new chunk
    for diff, extra, seek in matcher.triples(new, start):
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
    diffs = [b"".join(d) for *_s, d, _e in steps]
    extras = [b"".join(e) for *_s, e in steps]
    filled = _fill_copies(matcher.old, new, control, diffs, extras)
    return realign(matcher.old, new, *_like_before(new, *filled))


#: At most this many matched bytes are moved into a copy to make a step look like the one
#: before it.
LIKE_BEFORE = 16


def _like_before(
    new: bytes,
    control: list[tuple[int, int, int]],
    diffs: list[bytes],
    extras: list[bytes],
) -> Steps:
    """Shift the match/copy boundary of steps that insert the same bytes as the step before.

    "def read" -> "def release_read" is matched as "def re" + copy "lease_" + seek -2
    where the step before was match + copy "release_" + seek 0: moving the 2 matched
    bytes into the copy repeats the step before (copy 8, seek 0, same extra bytes),
    which LZMA2 codes in a few bits (and FLAG_REPEAT in one byte).
    """
    out_control = list(control)
    out_diffs = list(diffs)
    out_extras = list(extras)
    new_pos = 0
    for i, (add, copy, seek) in enumerate(control):
        k = -seek
        if (
            i
            and 0 < k <= min(add, LIKE_BEFORE)
            and out_control[i - 1][1:] == (copy + k, 0)
            and not diffs[i][add - k :].strip(b"\x00")
            and new[new_pos + add - k : new_pos + add + copy] == out_extras[i - 1]
        ):
            out_control[i] = (add - k, copy + k, 0)
            out_diffs[i] = diffs[i][: add - k]
            out_extras[i] = new[new_pos + add - k : new_pos + add + copy]
        new_pos += add + copy
    return out_control, out_diffs, out_extras


#: A copy this short between two matches on the same diagonal (a changed checksum, an
#: inode number) is sent as diff bytes instead: the two steps become one.
FILL_COPY = 16


def _fill_copies(
    old: bytes | mmap.mmap,
    new: bytes,
    control: list[tuple[int, int, int]],
    diffs: list[bytes],
    extras: list[bytes],
) -> Steps:
    """Merge steps separated by a short copy whose seek skips as many old bytes."""
    out: list[list[Any]] = []  # [old start, new start, add, copy, seek, diff pieces, extra]
    old_pos = new_pos = 0
    for (step_add, step_copy, step_seek), diff, extra in zip(control, diffs, extras, strict=True):
        step: list[Any] = [old_pos, new_pos, step_add, step_copy, step_seek, [diff], extra]
        old_pos += step_add + step_seek
        new_pos += step_add + step_copy
        if out and out[-1][3] == 0 and out[-1][4] == 0:  # the previous step runs on
            prev = out[-1]
            prev[2] += step_add
            prev[3], prev[4], prev[6] = step_copy, step_seek, extra
            prev[5].append(diff)
            step = prev
        else:
            out.append(step)
        start_old, start_new, add, copy, seek = (int(v) for v in step[:5])
        if 0 < copy <= FILL_COPY and seek == copy and start_old + add + copy <= len(old):
            at_old, at_new = start_old + add, start_new + add
            step[5].append(
                sub_bytes(new[at_new : at_new + copy], bytes(old[at_old : at_old + copy]))
            )
            step[2], step[3], step[4], step[6] = add + copy, 0, 0, b""
    return (
        [(a, c, s) for _o, _n, a, c, s, _d, _e in out],
        [b"".join(d) for *_x, d, _e in out],
        [e for *_x, e in out],
    )


def xor_diff(old: bytes | mmap.mmap, new: bytes, control: Sequence[tuple[int, int, int]]) -> bytes:
    """The chunk's diff bytes as new XOR old (the chunk's steps start at old 0)."""
    pieces = []
    old_pos = new_pos = 0
    for add, copy, seek in control:
        if add:
            pieces.append(
                xor_bytes(bytes(old[old_pos : old_pos + add]), new[new_pos : new_pos + add])
            )
        new_pos += add + copy
        old_pos += add + seek
    return b"".join(pieces)
