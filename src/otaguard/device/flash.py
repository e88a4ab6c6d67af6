"""A NOR-like flash: erase a sector, program erased cells at aligned offsets, read.

The rules are enforced, not assumed, because the bugs this model exists to
catch are exactly the ones a forgiving model hides: programming a cell that
is not erased (real flash silently ANDs the bits), unaligned writes (real
controllers reject or corrupt them), writes that straddle a sector.
Violations raise :class:`FlashUsageError`, a bug in the caller.

Storage is any mutable buffer: a ``bytearray`` for tests, or an ``mmap`` of
the device's ``flash.bin`` so that the file *is* the flash and whatever was
written before a (real or simulated) crash is what the next boot sees.
"""

from __future__ import annotations

import io
import mmap

from otaguard.device.faults import OpClock, TearFill
from otaguard.device.geometry import Geometry

Buffer = bytearray | mmap.mmap


class FlashUsageError(ValueError):
    """The caller broke a flash rule (a bug in otaguard, never a device fault)."""


class Flash:
    def __init__(self, geometry: Geometry, buffer: Buffer, clock: OpClock) -> None:
        if len(buffer) % geometry.sector_size:
            raise ValueError("flash size is not a whole number of sectors")
        self.geometry = geometry
        self.clock = clock
        self._buf = buffer
        self._erased_sector = bytes([geometry.erased]) * geometry.sector_size

    @classmethod
    def blank(cls, geometry: Geometry, size: int, clock: OpClock | None = None) -> Flash:
        return cls(geometry, bytearray([geometry.erased]) * size, clock or OpClock())

    @property
    def size(self) -> int:
        return len(self._buf)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FlashUsageError(f"read of {length} bytes at {offset:#x} is outside the flash")
        return bytes(self._buf[offset : offset + length])

    def is_erased(self, offset: int, length: int) -> bool:
        return self._buf[offset : offset + length] == self._erased_sector[:1] * length

    def erase_sector(self, index: int) -> None:
        """Erase one sector (one counted operation)."""
        size = self.geometry.sector_size
        if not 0 <= index < self.size // size:
            raise FlashUsageError(f"no sector {index}")
        start = index * size
        tear = self.clock.tick(f"erase sector {index}", size)
        if tear is None:
            self._buf[start : start + size] = self._erased_sector
            return
        self._buf[start : start + tear.prefix] = self._erased_sector[: tear.prefix]
        if tear.fill is TearFill.RANDOM:
            self._buf[start + tear.prefix : start + size] = tear.noise(size - tear.prefix)
        raise self.clock.torn()

    def program(self, offset: int, data: bytes) -> None:
        """Program erased cells (one counted operation of at most ``program_size`` bytes)."""
        g = self.geometry
        n = len(data)
        if offset % g.write_align or n % g.write_align or n == 0:
            raise FlashUsageError(
                f"program of {n} bytes at {offset:#x} is not aligned to {g.write_align}"
            )
        if n > g.program_size:
            raise FlashUsageError(f"program of {n} bytes exceeds the {g.program_size}-byte limit")
        if offset < 0 or offset + n > self.size:
            raise FlashUsageError(f"program at {offset:#x} is outside the flash")
        if offset // g.sector_size != (offset + n - 1) // g.sector_size:
            raise FlashUsageError(f"program at {offset:#x} straddles a sector boundary")
        if not self.is_erased(offset, n):
            raise FlashUsageError(f"program at {offset:#x} over cells that are not erased")
        tear = self.clock.tick(f"program {n} bytes at {offset:#x}", n)
        if tear is None:
            self._buf[offset : offset + n] = data
            return
        self._buf[offset : offset + tear.prefix] = data[: tear.prefix]
        if tear.fill is TearFill.RANDOM:
            self._buf[offset + tear.prefix : offset + n] = tear.noise(n - tear.prefix)
        raise self.clock.torn()

    def snapshot(self) -> bytes:
        return bytes(self._buf)

    def restore(self, image: bytes) -> None:
        if len(image) != self.size:
            raise ValueError("snapshot size does not match the flash")
        self._buf[:] = image


class FlashReader(io.RawIOBase):
    """A read-only, seekable file over ``[offset, offset + length)`` of a flash.

    The bootloader verifies images by streaming them from flash through this,
    so what is verified is exactly what is in the slot, not a copy that was
    checked before it was written.
    """

    def __init__(self, flash: Flash, offset: int, length: int) -> None:
        super().__init__()
        self._flash = flash
        self._start = offset
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self._length - self._pos))
        if n:
            buffer[:n] = self._flash.read(self._start + self._pos, n)
            self._pos += n
        return n
