"""Re-aligning dense diffs: blocks of a step that read another old diagonal better."""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator

from otaguard.delta.apply import sub_bytes

#: A chunk's bsdiff steps: control triples (add, copy, seek), diff pieces, extra pieces.
Steps = tuple[list[tuple[int, int, int]], list[bytes], list[bytes]]

#: Re-alignment of dense diffs: blocks of this many new bytes each pick their old diagonal
#: among those that 16-byte pieces of them match within _ALIGN_WINDOW of the step's.
_ALIGN_BLOCK = 64
_ALIGN_GRAM = 16
_ALIGN_WINDOW = 16 << 10
#: Only clusters of at least this many non-zero diff bytes (gaps under 1 KiB) are looked at.
_ALIGN_MIN_CHANGES = 32
_ALIGN_GAP = 1024
#: ... and at most one in this many bytes differs (denser: code, where bsdiff's alignment
#: is right and the changes are real; looking there costs seconds, saves little).
_ALIGN_DENSITY = 8
#: ... and per chunk, the 16 such with the most changes: a bound on the time it takes.
_ALIGN_CLUSTERS = 16
#: What a change of diagonal costs (a control triple), in differing bytes.
_ALIGN_SWITCH = 6
_ALIGN_KEEP = 12
_CHANGES = re.compile(rb"[^\x00]+")


def _differing(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "little") ^ int.from_bytes(b, "little")
    return len(a) - x.to_bytes(len(a), "little").count(0)


_ZERO_BLOCK = bytes(1 << 12)


def _changes(diff: bytes) -> Iterator[tuple[int, int]]:
    """The stretches of non-zero bytes, a stretch that crosses a 4 KiB boundary in two.

    Why blocks: a diff is mostly zeros, which a memcmp per block skips far faster than the
    regular expression can.
    """
    size = len(_ZERO_BLOCK)
    for at in range(0, len(diff), size):
        if diff[at : at + size] != _ZERO_BLOCK[: min(size, len(diff) - at)]:
            for m in _CHANGES.finditer(diff, at, at + size):
                yield m.start(), m.end()


def _clusters(diff: bytes) -> list[tuple[int, int, int]]:
    """Stretches of the diff with at least _ALIGN_MIN_CHANGES differing bytes."""
    found: list[list[int]] = []  # [start, end, changes]
    for start, end in _changes(diff):
        if found and start - found[-1][1] <= _ALIGN_GAP:
            found[-1][1] = end
            found[-1][2] += end - start
        else:
            found.append([start, end, end - start])
    return [
        (s, e, changes)
        for s, e, changes in found
        if changes >= _ALIGN_MIN_CHANGES and changes * _ALIGN_DENSITY <= e - s
    ]


class _Grams:
    """Where 16-byte pieces occur in old[low:high]: their first four places.

    Why this shape: a dict from each piece to its first place is built by one comprehension
    (the loop that collected four places per piece took most of the re-alignment's time);
    the few pieces asked for that occur again get their next places from ``bytes.find``.
    """

    def __init__(self, old: bytes | mmap.mmap, low: int, high: int) -> None:
        self._low = max(0, low)
        window = self._window = bytes(old[self._low : min(len(old), high)])
        gram = _ALIGN_GRAM
        # from the end, so that each piece keeps its first place
        self._first = {window[i : i + gram]: i for i in range(len(window) - gram, -1, -1)}
        self._found: dict[bytes, list[int]] = {}

    def get(self, gram: bytes) -> list[int]:
        places = self._found.get(gram)
        if places is None:
            at = self._first.get(gram, -1)
            places = []
            while at >= 0 and len(places) < 4:
                places.append(self._low + at)
                at = self._window.find(gram, at + 1)
            self._found[gram] = places
        return places


def _diagonals(
    old: bytes | mmap.mmap,
    new: bytes,
    old_pos: int,
    new_pos: int,
    n: int,
    index: _Grams,
) -> list[int]:
    """Per block of new[new_pos : new_pos + n], the old diagonal (old - new) to read it at.

    bsdiff's approximate matching keeps a diagonal while about half the bytes match: on an
    inode table after an inserted inode it keeps the old one, and every inode then differs
    in ~10 bytes instead of its 4 checksum bytes. A small dynamic program over the blocks
    picks, per block, the diagonal with the fewest differing bytes plus _ALIGN_SWITCH per
    change, among the step's own and those some 16-byte piece of the block matches.
    """
    block, gram = _ALIGN_BLOCK, _ALIGN_GRAM
    base = old_pos - new_pos
    costs: dict[int, int] = {}
    back: list[dict[int, int]] = []
    for b in range(0, n, block):
        s, e = new_pos + b, new_pos + min(n, b + block)
        piece = new[s:e]
        candidates = {base, *costs}
        if bytes(old[s + base : e + base]) != piece:
            for p in range(s, e - gram + 1, 4):
                candidates.update(q - p for q in index.get(new[p : p + gram]))
        current: dict[int, int] = {}
        links: dict[int, int] = {}
        # costs is ordered by cost: the cheapest way to come from another diagonal is from
        # its first; staying wins when strictly cheaper (the first minimum, as min() picks)
        first = next(iter(costs), None)
        for d in candidates:
            if s + d < 0 or e + d > len(old):
                continue
            here = _differing(piece, bytes(old[s + d : e + d]))
            if first is None:
                current[d], links[d] = here + (0 if d == base else _ALIGN_SWITCH), d
                continue
            stay = costs.get(d)
            if stay is not None and (d == first or stay < costs[first] + _ALIGN_SWITCH):
                current[d], links[d] = here + stay, d
            else:
                current[d], links[d] = here + costs[first] + _ALIGN_SWITCH, first
        costs = {d: current[d] for d in sorted(current, key=current.__getitem__)[:_ALIGN_KEEP]}
        back.append(links)
    d = min(costs, key=lambda x: costs[x])
    path = [d]
    for links in reversed(back[1:]):
        d = links[d]
        path.append(d)
    return path[::-1]


def realign(
    old: bytes | mmap.mmap,
    new: bytes,
    control: list[tuple[int, int, int]],
    diffs: list[bytes],
    extras: list[bytes],
) -> Steps:
    """Split steps whose diff is dense where other diagonals read the old image better."""
    out_control: list[tuple[int, int, int]] = []
    out_diffs: list[bytes] = []
    out_extras: list[bytes] = []
    # the _ALIGN_CLUSTERS clusters with the most changes (each costs ~30 ms)
    found = [
        (changes, i, s, e)
        for i, ((add, _c, _s), diff) in enumerate(zip(control, diffs, strict=True))
        if add >= 2 * _ALIGN_BLOCK
        for s, e, changes in _clusters(diff)
    ]
    chosen: dict[int, list[tuple[int, int]]] = {}
    for _changes, i, s, e in sorted(found, reverse=True)[:_ALIGN_CLUSTERS]:
        chosen.setdefault(i, []).append((s, e))
    old_pos = new_pos = 0
    for i, ((add, copy, seek), diff, extra) in enumerate(zip(control, diffs, extras, strict=True)):
        pieces: list[tuple[int, int]] = []  # (length, old start)
        done = 0
        if i in chosen:
            for first, last in sorted(chosen[i]):
                s, e = max(done, first - _ALIGN_BLOCK), min(add, last + _ALIGN_BLOCK)
                if e - s < 2 * _ALIGN_BLOCK:
                    continue
                if s > done:
                    pieces.append((s - done, old_pos + done))
                index = _Grams(old, old_pos + s - _ALIGN_WINDOW, old_pos + e + _ALIGN_WINDOW)
                path = _diagonals(old, new, old_pos + s, new_pos + s, e - s, index)
                for k, d in enumerate(path):
                    b = s + k * _ALIGN_BLOCK
                    pieces.append((min(e, b + _ALIGN_BLOCK) - b, new_pos + b + d))
                done = e
        if all(
            at == old_pos + sum(ln for ln, _ in pieces[:i]) for i, (_ln, at) in enumerate(pieces)
        ):
            out_control.append((add, copy, seek))
            out_diffs.append(diff)
            out_extras.append(extra)
        else:
            if done < add:
                pieces.append((add - done, old_pos + done))
            merged: list[list[int]] = []
            for ln, at in pieces:
                if merged and merged[-1][1] + merged[-1][0] == at:
                    merged[-1][0] += ln
                else:
                    merged.append([ln, at])
            if merged[0][1] != old_pos:  # the step now starts elsewhere: so must the seek to it
                if out_control:
                    a, c, s = out_control[-1]
                    out_control[-1] = (a, c, s + merged[0][1] - old_pos)
                else:
                    out_control.append((0, 0, merged[0][1] - old_pos))
                    out_diffs.append(b"")
                    out_extras.append(b"")
            at_new = new_pos
            for j, (ln, at) in enumerate(merged):
                last = j + 1 == len(merged)
                following = old_pos + add + seek if last else merged[j + 1][1]
                out_control.append((ln, copy if last else 0, following - at - ln))
                out_diffs.append(sub_bytes(new[at_new : at_new + ln], bytes(old[at : at + ln])))
                out_extras.append(extra if last else b"")
                at_new += ln
        old_pos += add + seek
        new_pos += add + copy
    return out_control, out_diffs, out_extras
