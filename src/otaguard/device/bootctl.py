"""Boot control: per-slot priority, tries, successful and unbootable, kept in two copies.

The semantics are Android's ``boot_control``: the bootloader boots the
bootable slot with the highest priority; a slot not yet marked successful is
a *trial* and each boot of it spends one try; a trial out of tries, or a slot
whose image fails verification, is marked unbootable.

Android keeps one copy of this record and resets it to defaults when its CRC
is bad, so a power cut during a metadata write can forget which slot was good.
Here the record is kept in **two copies**, in two sectors, each with a
sequence number and a CRC-32. A write always goes to the copy that does *not*
hold the newest valid record, so at every instant at least one valid copy
exists: a torn write (erase or program cut short) damages only the copy being
written, and the reader falls back to the other one -- the previous state,
which is exactly what "the write did not happen" means.

Record layout (24 bytes, big-endian), padded to the write alignment with the
erased value::

    0  magic "OGBC" | 4 u8 version (1) | 5 u8 slot count (2) | 6 u16 reserved (0)
    8  u32 sequence
    12 per slot (A, B): u8 priority (0-15) | u8 tries (0-7) | u8 flags | u8 reserved (0)
       flags: bit 0 successful, bit 1 unbootable
    20 u32 CRC-32 of bytes 0-19

The record is not authenticated and need not be: it only chooses *which*
slot to try; whatever it says, the bootloader verifies the image before
running it. An attacker who rewrites it can at worst make the device boot the
other *verified* image or stay in recovery.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

from otaguard.device.flash import Flash
from otaguard.device.geometry import SLOTS, Layout
from otaguard.errors import MalformedError

MAGIC = b"OGBC"
VERSION = 1
MAX_PRIORITY = 15
MAX_TRIES = 7
RECORD = struct.Struct(">4sBBHI4s4sI")
RECORD_SIZE = RECORD.size  # 24
SEQ_MOD = 1 << 32
_SUCCESSFUL = 0x01
_UNBOOTABLE = 0x02


@dataclass(frozen=True)
class SlotState:
    priority: int = 0
    tries: int = 0
    successful: bool = False
    unbootable: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= MAX_PRIORITY or not 0 <= self.tries <= MAX_TRIES:
            raise ValueError("slot priority or tries out of range")

    @property
    def bootable(self) -> bool:
        return self.priority > 0 and not self.unbootable and (self.successful or self.tries > 0)

    @property
    def is_trial(self) -> bool:
        return self.bootable and not self.successful

    def encode(self) -> bytes:
        flags = (_SUCCESSFUL if self.successful else 0) | (_UNBOOTABLE if self.unbootable else 0)
        return bytes([self.priority, self.tries, flags, 0])

    @classmethod
    def decode(cls, raw: bytes) -> SlotState:
        priority, tries, flags, reserved = raw
        if priority > MAX_PRIORITY or tries > MAX_TRIES:
            raise MalformedError("boot control: priority or tries out of range")
        if flags & ~(_SUCCESSFUL | _UNBOOTABLE) or reserved:
            raise MalformedError("boot control: unknown flags")
        return cls(priority, tries, bool(flags & _SUCCESSFUL), bool(flags & _UNBOOTABLE))


UNBOOTABLE = SlotState()


@dataclass(frozen=True)
class BootRecord:
    seq: int
    a: SlotState = UNBOOTABLE
    b: SlotState = UNBOOTABLE

    def slot(self, letter: str) -> SlotState:
        return self.a if letter == "a" else self.b

    def with_slot(self, letter: str, state: SlotState) -> BootRecord:
        return replace(self, a=state) if letter == "a" else replace(self, b=state)

    def encode(self) -> bytes:
        body = RECORD.pack(
            MAGIC, VERSION, len(SLOTS), 0, self.seq % SEQ_MOD, self.a.encode(), self.b.encode(), 0
        )[:-4]
        return body + struct.pack(">I", zlib.crc32(body))


def parse_record(raw: bytes) -> BootRecord:
    """Strictly parse one copy; MalformedError for anything but a whole, valid record."""
    if len(raw) < RECORD_SIZE:
        raise MalformedError("boot control: record truncated")
    magic, version, count, reserved, seq, a, b, crc = RECORD.unpack(raw[:RECORD_SIZE])
    if magic != MAGIC:
        raise MalformedError("boot control: bad magic")
    if crc != zlib.crc32(raw[: RECORD_SIZE - 4]):
        raise MalformedError("boot control: bad CRC")
    if version != VERSION or count != len(SLOTS) or reserved:
        raise MalformedError("boot control: unsupported version or layout")
    return BootRecord(seq, SlotState.decode(a), SlotState.decode(b))


def newest(copies: tuple[BootRecord | None, BootRecord | None]) -> int | None:
    """Index of the copy to believe: the valid one, or the successor of the other."""
    first, second = copies
    if first is None or second is None:
        return None if first is None and second is None else (0 if second is None else 1)
    if (second.seq - first.seq) % SEQ_MOD == 1:
        return 1
    if (first.seq - second.seq) % SEQ_MOD == 1:
        return 0
    return 1 if second.seq > first.seq else 0  # never written so; corruption or tampering


class BootControl:
    """Reads and writes the two boot-control copies in flash."""

    def __init__(self, flash: Flash, layout: Layout) -> None:
        self.flash = flash
        self.layout = layout
        align = flash.geometry.write_align
        self._padded = -(-RECORD_SIZE // align) * align

    def copies(self) -> tuple[BootRecord | None, BootRecord | None]:
        out: list[BootRecord | None] = []
        for region in self.layout.meta_copies:
            try:
                out.append(parse_record(self.flash.read(region.offset, RECORD_SIZE)))
            except MalformedError:
                out.append(None)
        return out[0], out[1]

    def load(self) -> BootRecord | None:
        """The newest valid record, or None when neither copy is valid."""
        copies = self.copies()
        index = newest(copies)
        return None if index is None else copies[index]

    def write(self, record: BootRecord) -> BootRecord:
        """Store ``record`` (its ``seq`` is replaced) in the older copy: erase, then program.

        Two counted operations. Whatever happens to them, the newest valid
        copy is untouched until this write has fully landed.
        """
        copies = self.copies()
        index = newest(copies)
        target = 0 if index is None else 1 - index
        seq = 1 if index is None else (copies[index].seq + 1) % SEQ_MOD  # type: ignore[union-attr]
        stored = replace(record, seq=seq)
        data = stored.encode()
        data += bytes([self.flash.geometry.erased]) * (self._padded - len(data))
        region = self.layout.meta_copies[target]
        self.flash.erase_sector(region.offset // self.flash.geometry.sector_size)
        self.flash.program(region.offset, data)
        return stored
