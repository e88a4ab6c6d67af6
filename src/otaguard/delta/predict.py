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

Absolute references can be predicted too: pointers stored as plain 32- or 64-bit
values (an ELF's DWARF address ranges, location lists, relocation addends, literal pools).
The creator finds the code segment in the old image's ELF headers and sends its
virtual address range and the two address-to-offset biases; a value in that range
is a target, re-aimed the same way. Nothing else of the ELF is trusted or needed.

Only for small images (old image and new payload within one chunk, so both ends
may hold the old image and the triples), and at most ``MAX_SEGMENTS`` triples.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import re
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field

#: Most control triples of a predicted container (the applier holds them, 32 bytes each, and
#: their map, at most 48 bytes each).
MAX_SEGMENTS = 1 << 15


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


@dataclass(frozen=True)
class Absolute:
    """Absolute pointers: ``width``-byte little-endian values in ``[lo, hi)`` are addresses.

    An address ``v`` is old-image offset ``v - old_bias``; new-image (payload) offset
    ``t`` is address ``t + new_bias``.
    """

    width: int  # 4 or 8
    lo: int
    hi: int
    old_bias: int
    new_bias: int
    _pattern: re.Pattern[bytes] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.width not in (4, 8) or not 0 <= self.lo < self.hi <= 1 << (8 * self.width):
            raise ValueError("bad absolute-reference range")
        # a prefilter: the bytes above the range's top byte are zero, the top byte in range
        top = ((self.hi - 1).bit_length() - 1) // 8 if self.hi > 1 else 0
        low, high = self.lo >> (8 * top), (self.hi - 1) >> (8 * top)
        pattern = b"(?=%s[%s-%s]%s)" % (
            b"[\\x00-\\xff]" * top,
            re.escape(bytes([low])),
            re.escape(bytes([high])),
            b"\\x00" * (self.width - top - 1),
        )
        object.__setattr__(self, "_pattern", re.compile(pattern, re.DOTALL))

    def references(self, old: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(offset, old target offset) of the pointers wholly inside ``old[start:end]``."""
        limit = min(end, len(old))
        width, lo, hi = self.width, self.lo, self.hi
        resume = start
        for match in self._pattern.finditer(old, start, limit):
            p = match.start()
            if p < resume or p + width > limit:
                continue
            value = int.from_bytes(old[p : p + width], "little")
            if lo <= value < hi:
                resume = p + width
                yield p, value - self.old_bias


class Alignment:
    """Where each old offset went: through the longest matched range that holds it.

    Built from one chunk's add steps (old start, new start, length). Ranges may overlap
    in the old image (bsdiff reuses old bytes); a target is mapped through the longest
    range holding it (ties: the smaller new start, then the smaller old start), which is
    the one most likely to be the code it names rather than a short coincidental match.
    Kept as disjoint pieces (start, end, shift), at most two per range.
    """

    def __init__(self, old_starts: array[int], new_starts: array[int], lengths: array[int]) -> None:
        events = sorted(
            (old_starts[i], -lengths[i], new_starts[i]) for i in range(len(lengths)) if lengths[i]
        )  # a pure copy or seek maps nothing
        bounds = sorted({o for o, _n, _s in events} | {o - n for o, n, _s in events})
        self._start, self._end, self._shift = array("q"), array("q"), array("q")
        active: list[tuple[int, int, int, int]] = []  # (-length, new start, old start, end)
        k = 0
        for i, at in enumerate(bounds):
            while k < len(events) and events[k][0] == at:
                o, neg, n = events[k]
                heapq.heappush(active, (neg, n, o, o - neg))
                k += 1
            while active and active[0][3] <= at:
                heapq.heappop(active)
            if active and i + 1 < len(bounds):
                _neg, n, o, _e = active[0]
                if self._end and self._end[-1] == at and self._shift[-1] == n - o:
                    self._end[-1] = bounds[i + 1]  # the same range goes on
                else:
                    self._start.append(at)
                    self._end.append(bounds[i + 1])
                    self._shift.append(n - o)

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
        i = bisect.bisect_right(self._start, old_offset) - 1
        if i >= 0 and old_offset < self._end[i]:
            return old_offset + self._shift[i]
        return None


def predict(
    old: bytes,
    old_start: int,
    new_start: int,
    length: int,
    arch: Arch,
    phase: int,
    alignment: Alignment,
    absolute: Absolute | None = None,
) -> bytes:
    """The new bytes ``new_start .. +length`` as predicted from the old bytes aligned with them.

    Absolute pointers are re-aimed first, relative references after (they win where both
    were read into the same bytes).
    """
    out = bytearray(old[old_start : old_start + length])
    if arch is Arch.NONE:
        return bytes(out)
    if absolute is not None:
        width, bias, limit = absolute.width, absolute.new_bias, 1 << (8 * absolute.width)
        for at, target in absolute.references(old, old_start, old_start + length):
            moved = alignment.new_offset(target)
            if moved is not None and 0 <= moved + bias < limit:
                out[at - old_start : at - old_start + width] = (moved + bias).to_bytes(
                    width, "little"
                )
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


def raw_range(load_address: int, length: int, offset: int) -> Absolute | None:
    """32-bit pointers into a raw image of ``length`` bytes loaded at ``load_address``.

    For firmware without ELF headers (``objcopy -O binary``): its literal pools hold such
    pointers. ``offset``: where the payload sits in the old image file.
    """
    if not length or not 0 <= load_address < load_address + length <= 1 << 32:
        return None
    return Absolute(4, load_address, load_address + length, load_address - offset, load_address)


#: Guessed load addresses: pointer values below this are not looked at (small integers
#: abound in code and data and would always win), nor windows with fewer pointers than this.
GUESS_FLOOR = 1 << 12
GUESS_MIN_POINTERS = 16
#: A guess is rounded down to these alignments (flash slots are page-aligned, vector tables
#: at least so); how far off it may be costs little: see :func:`guess_load_addresses`.
GUESS_PAGE = 1 << 12
GUESS_ALIGN = 1 << 8


def guess_load_addresses(payload: bytes, most: int = 3) -> list[int]:
    """Where a raw firmware payload may be loaded, best guess first (creator side only).

    Why: ``objcopy -O binary`` firmware carries no headers, and without its load address its
    literal pools' pointers cannot be predicted. Such pointers name places in the image, so
    the aligned 32-bit words of the payload crowd into the window ``[base, base + length)``:
    the densest such windows (at most ``most``, disjoint, each with at least a quarter of the
    densest one's pointers) give the guesses (two for the densest). A guess off by
    ``d`` bytes still predicts every pointer whose target moved like the byte ``d`` before
    it, so rounding down is nearly free; a wrong guess (RAM pointers, a table of constants)
    only fails to shrink the delta, and the creator keeps it only if it does. Values below
    ``GUESS_FLOOR`` are not counted, so 0 is never guessed: an image linked there has its
    pointers among the small integers that fill code, which no count tells apart (the
    creator can still be told: ``--load-address 0``).
    """
    length = len(payload)
    if not GUESS_FLOOR <= length < 1 << 32:
        return []
    words = array("I")
    words.frombytes(payload[: length - length % 4])
    if words.itemsize != 4:  # pragma: no cover - every CPython platform has a 4-byte "I"
        return []
    if sys.byteorder == "big":  # pragma: no cover
        words.byteswap()
    top = (1 << 32) - length
    values = sorted(v for v in words if GUESS_FLOOR <= v <= top)
    windows: list[tuple[int, int]] = []  # (-count, first value)
    end = 0
    for i, value in enumerate(values):
        if i and values[i - 1] == value:
            continue
        end = max(end, i)
        while end < len(values) and values[end] < value + length:
            end += 1
        windows.append((i - end, value))
    windows.sort()
    guesses: list[int] = []
    found = 0
    for negative, value in windows:
        if -negative < max(GUESS_MIN_POINTERS, -windows[0][0] // 4) or found == most:
            break
        if all(abs(value - g) >= length for g in guesses):
            # the window's lowest pointer, rounded down to a page; for the densest, also less
            for align in (GUESS_PAGE, GUESS_ALIGN)[: 2 if not found else 1]:
                if value & -align not in guesses:
                    guesses.append(value & -align)
            found += 1
    return guesses


#: ELF ``e_machine`` values whose code one predictor reads.
_ELF_MACHINES = {40: Arch.THUMB2, 62: Arch.X86_64}


def elf_arch(payload: bytes) -> Arch | None:
    """The predictor for a little-endian ELF payload's machine; None if not such an ELF.

    Creator side only: it spares the trial of a predictor that cannot win (Thumb-2 on an
    x86-64 .so); an unknown machine gets ``Arch.NONE``.
    """
    if len(payload) < 20 or payload[:4] != b"\x7fELF" or payload[5] != 1:
        return None
    return _ELF_MACHINES.get(int.from_bytes(payload[18:20], "little"), Arch.NONE)


_PT_LOAD, _PF_X = 1, 1


def elf_code_range(payload: bytes, offset: int) -> Absolute | None:
    """The largest executable segment of a little-endian ELF payload as an :class:`Absolute`.

    ``offset``: where the payload sits in the old image file. Creator side only: a wrong or
    hostile ELF header only makes the prediction (and so the delta) worse, never wrong.
    """
    if len(payload) < 64 or payload[:4] != b"\x7fELF" or payload[5] != 1:
        return None
    wide = payload[4] == 2
    try:
        if wide:
            (phoff,) = struct.unpack_from("<Q", payload, 32)
            phentsize, phnum = struct.unpack_from("<HH", payload, 54)
        else:
            (phoff,) = struct.unpack_from("<I", payload, 28)
            phentsize, phnum = struct.unpack_from("<HH", payload, 42)
        best = None
        entry = 56 if wide else 32
        if phentsize < entry or phoff + phnum * phentsize > len(payload):
            return None  # (also keeps a hostile offset from reaching unpack_from)
        for i in range(min(phnum, 256)):
            at = phoff + i * phentsize
            if wide:
                p_type, p_flags, p_offset, p_vaddr, _pa, p_filesz = struct.unpack_from(
                    "<IIQQQQ", payload, at
                )
            else:
                p_type, p_offset, p_vaddr, _pa, p_filesz, _mem, p_flags = struct.unpack_from(
                    "<IIIIIII", payload, at
                )
            executable = p_type == _PT_LOAD and p_flags & _PF_X and p_filesz
            if executable and (best is None or p_filesz > best[2]):
                best = (p_offset, p_vaddr, p_filesz)
    except struct.error:
        return None
    if best is None:
        return None
    p_offset, p_vaddr, p_filesz = best
    width = 8 if wide else 4
    if p_vaddr + p_filesz > 1 << (8 * width):
        return None
    bias = p_vaddr - p_offset
    return Absolute(width, p_vaddr, p_vaddr + p_filesz, bias - offset, bias)
