"""Pointer-aware prediction: what an aligned old byte range should look like in the new image.

bsdiff predicts each new byte of a matched range by the old byte it is aligned
with, and sends the difference. In code, that prediction is wrong wherever an
instruction names another place by a relative offset (a Thumb-2 ``bl``/``b.w``,
an x86-64 ``call``/``jmp``/``jcc rel32`` or RIP-relative operand) and the place
named moved by a different amount than the instruction: a four-line fix early
in a firmware image changes hundreds of branch offsets, each a few diff bytes.

The predictor reads such references in the *old* image (the applier has it,
verified), maps each reference's target through the matched ranges themselves
(the control triples: old range -> new range) and re-encodes it for the new
place, so the diff is zero where code only moved (Zucchini's idea, on bsdiff's
alignment). Nothing extra is sent: both ends derive the same prediction from
the old image and the control triples, in this one module. A wrong guess (data
that merely looks like an instruction) costs diff bytes, never correctness:
the diff still corrects every byte, and the output hashes check the result.

Only for small images (old image and new payload within one chunk, so both ends
may hold the old image and the triples), and at most ``MAX_SEGMENTS`` triples.
"""

from __future__ import annotations

import bisect
import enum
import re
import struct
from array import array
from collections.abc import Iterable, Iterator

#: Most control triples of a predicted container (the applier holds them all: 24 B each).
MAX_SEGMENTS = 1 << 16
#: How far back from the last range starting at or before a target to look for one holding it.
_LOOKBACK = 8


class Arch(enum.IntEnum):
    """Which references the predictor reads; values are stable on disk."""

    NONE = 0
    THUMB2 = 1  # Thumb-2 BL and B.W (T4), at even payload offsets
    X86_64 = 2  # call/jmp/jcc rel32 and RIP-relative mov/lea/cmp/call/jmp


_ANY = rb"[\x00-\xff]"
#: Thumb-2 32-bit BL (second halfword 11x1) and B.W T4 (10x1), little-endian halfwords.
_THUMB = re.compile(rb"(?=" + _ANY + rb"[\xf0-\xf7]" + _ANY + rb"[\x90-\x9f\xb0-\xbf\xd0-\xff])")
#: x86-64 opcodes whose last four bytes are a rel32 or RIP-relative disp32 (no trailing imm).
_X86 = re.compile(
    rb"(?=[\xe8\xe9]|\x0f[\x80-\x8f]|[\x40-\x4f][\x8b\x8d\x89\x3b\x39\x03\x2b\x33\x0b\x23\x85]"
    rb"[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]|[\x8b\x8d\x89][\x05\x0d\x15\x1d\x25\x2d\x35\x3d]"
    rb"|\xff[\x15\x25])"
)
_REL32 = struct.Struct("<i")


def _x86_field(old: bytes, p: int) -> int:
    """Offset of the rel32/disp32 field from the opcode at ``p`` (it ends the instruction)."""
    first = old[p]
    if first in (0xE8, 0xE9):
        return 1
    if 0x40 <= first <= 0x4F:
        return 3
    return 2


def _thumb_decode(hw1: int, hw2: int) -> int:
    s = (hw1 >> 10) & 1
    i1 = 1 ^ ((hw2 >> 13) & 1) ^ s
    i2 = 1 ^ ((hw2 >> 11) & 1) ^ s
    imm = (s << 24) | (i1 << 23) | (i2 << 22) | ((hw1 & 0x3FF) << 12) | ((hw2 & 0x7FF) << 1)
    return imm - (1 << 25) if s else imm


def _thumb_encode(hw1: int, hw2: int, offset: int) -> bytes | None:
    if offset & 1 or not -(1 << 24) <= offset < 1 << 24:
        return None
    imm = offset & ((1 << 25) - 1)
    s = imm >> 24
    j1 = (1 ^ ((imm >> 23) & 1)) ^ s
    j2 = (1 ^ ((imm >> 22) & 1)) ^ s
    hw1 = (hw1 & 0xF800) | (s << 10) | ((imm >> 12) & 0x3FF)
    hw2 = (hw2 & 0xD000) | (j1 << 13) | (j2 << 11) | ((imm >> 1) & 0x7FF)
    return struct.pack("<HH", hw1, hw2)


def references(
    old: bytes, start: int, end: int, arch: Arch, phase: int
) -> Iterator[tuple[int, int, int]]:
    """(field offset, field end, target) of the references wholly inside ``old[start:end]``.

    Scanned left to right from ``start``; a reference's bytes are not scanned again.
    ``phase``: Thumb instructions sit at offsets ``phase + 2k`` of the old image.
    """
    limit = min(end, len(old))
    size = len(old)
    resume = start
    if arch is Arch.THUMB2:
        for match in _THUMB.finditer(old, start, limit):
            p = match.start()
            if p < resume or (p - phase) & 1 or p + 4 > limit:
                continue
            hw1, hw2 = struct.unpack_from("<HH", old, p)
            target = p + 4 + _thumb_decode(hw1, hw2)
            if 0 <= target < size:
                resume = p + 4
                yield p, p + 4, target
    elif arch is Arch.X86_64:
        for match in _X86.finditer(old, start, limit):
            p = match.start()
            if p < resume:
                continue
            field = p + _x86_field(old, p)
            if field + 4 > limit:
                continue
            target = field + 4 + _REL32.unpack_from(old, field)[0]
            if 0 <= target < size:
                resume = field + 4
                yield field, field + 4, target


class Alignment:
    """The matched ranges (old start, new start, length) of one chunk, searchable by old offset."""

    def __init__(self, old_starts: array[int], new_starts: array[int], lengths: array[int]) -> None:
        kept = (
            i for i in range(len(lengths)) if lengths[i] > 0
        )  # a pure copy or seek maps nothing
        order = sorted(kept, key=lambda i: (old_starts[i] << 64) + new_starts[i])
        self._old = array("q", (old_starts[i] for i in order))
        self._new = array("q", (new_starts[i] for i in order))
        self._len = array("q", (lengths[i] for i in order))

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[int, int, int]]) -> Alignment:
        """From a chunk's control triples (add, copy, seek), old position starting at 0."""
        olds, news, lengths = array("q"), array("q"), array("q")
        old = new = 0
        for add, copy, seek in triples:
            olds.append(old)
            news.append(new)
            lengths.append(add)
            new += add + copy
            old += add + seek
        return cls(olds, news, lengths)

    def new_offset(self, old_offset: int) -> int | None:
        """Where the new image holds the old image's byte ``old_offset`` (None: not matched)."""
        i = bisect.bisect_right(self._old, old_offset) - 1
        for k in range(i, max(-1, i - _LOOKBACK), -1):
            if old_offset < self._old[k] + self._len[k]:
                return self._new[k] + old_offset - self._old[k]
        return None


def predict(
    old: bytes,
    old_start: int,
    new_start: int,
    length: int,
    arch: Arch,
    phase: int,
    alignment: Alignment,
) -> bytes:
    """The new bytes ``new_start .. +length`` as predicted from the old bytes aligned with them."""
    out = bytearray(old[old_start : old_start + length])
    if arch is Arch.NONE:
        return bytes(out)
    shift = new_start - old_start
    for field, field_end, target in references(old, old_start, old_start + length, arch, phase):
        moved = alignment.new_offset(target)
        if moved is None:
            continue
        at = field - old_start
        if arch is Arch.THUMB2:
            hw1, hw2 = struct.unpack_from("<HH", old, field)
            encoded = _thumb_encode(hw1, hw2, moved - (field_end + shift))
            if encoded is not None:
                out[at : at + 4] = encoded
        else:
            offset = moved - (field_end + shift)
            if -(1 << 31) <= offset < 1 << 31:
                out[at : at + 4] = _REL32.pack(offset)
    return bytes(out)


def payload_phase(old: bytes) -> int:
    """Offset of the old image's payload modulo 4 (its instructions' alignment), 0 if unknown."""
    if len(old) >= 16 and old[:8] == b"OTAGUARD":
        return (16 + int.from_bytes(old[12:16], "big")) & 3
    return 0
