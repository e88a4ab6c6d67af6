"""Flash geometry and the partition layout of a device.

A geometry is what the bootloader must respect to write flash correctly:
the erase unit (sector), the program granularity (write alignment), the
largest program operation, and the value erased cells read back as. NOR
flash reads 0xFF when erased; some MRAM/RRAM parts and ECC flash read 0x00.
Both matter, because a parser that treats "all 0xFF" as "no data" breaks on
the other kind: the boot-control record therefore never relies on the erased
value, it relies on its magic and CRC.

The layout is fixed at manufacture: two sectors for the two boot-control
copies, then for each slot letter (A, then B) one region per component.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from otaguard.errors import UsageError

ALIGNMENTS = (1, 8, 16, 32)
ERASED_VALUES = (0xFF, 0x00)
SLOTS = ("a", "b")
KIB = 1024


@dataclass(frozen=True)
class Geometry:
    """The physical rules of one flash part."""

    name: str
    sector_size: int
    write_align: int
    erased: int = 0xFF
    program_size: int = 256
    slot_size: int = 512 * KIB

    def __post_init__(self) -> None:
        if self.write_align not in ALIGNMENTS:
            raise UsageError(f"write alignment must be one of {ALIGNMENTS}")
        if self.erased not in ERASED_VALUES:
            raise UsageError("the erased value must be 0xff or 0x00")
        if self.sector_size < 256 or self.sector_size & (self.sector_size - 1):
            raise UsageError("the sector size must be a power of two of at least 256 bytes")
        if (
            self.program_size % self.write_align
            or not 0 < self.program_size <= self.sector_size
            or self.sector_size % self.program_size
        ):
            raise UsageError(
                "the program size must be a multiple of the alignment that divides the sector"
            )
        if self.slot_size <= 0 or self.slot_size % self.sector_size:
            raise UsageError(f"the slot size must be a multiple of {self.sector_size} bytes")

    def with_erased(self, erased: int) -> Geometry:
        return replace(self, erased=erased)

    def with_slot_size(self, slot_size: int) -> Geometry:
        return replace(self, slot_size=slot_size)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sector_size": self.sector_size,
            "write_align": self.write_align,
            "erased": self.erased,
            "program_size": self.program_size,
            "slot_size": self.slot_size,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Geometry:
        def num(key: str) -> int:
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"device geometry: {key} must be an integer")
            return value

        name = data.get("name")
        return cls(
            name=str(name),
            sector_size=num("sector_size"),
            write_align=num("write_align"),
            erased=num("erased"),
            program_size=num("program_size"),
            slot_size=num("slot_size"),
        )


#: Named shapes, loosely after real parts; every one exists in both erased values
#: (the fault campaign runs them all with 0xFF and 0x00).
PRESETS: dict[str, Geometry] = {
    g.name: g
    for g in (
        Geometry("nor-4k", 4 * KIB, 1, program_size=256),
        Geometry("nor-4k-sector-write", 4 * KIB, 8, program_size=4 * KIB),
        Geometry("stm32l4", 2 * KIB, 8, program_size=256),
        Geometry("stm32u5", 8 * KIB, 16, program_size=512),
        Geometry("stm32h7", 128 * KIB, 32, program_size=1024),
        Geometry("spi-nor-64k", 64 * KIB, 1, program_size=256),
        Geometry("tiny-512", 512, 8, program_size=512),
        Geometry("mram-1k", 1 * KIB, 32, erased=0x00, program_size=128),
    )
}


def preset(name: str) -> Geometry:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown geometry {name!r} (known: {', '.join(sorted(PRESETS))})"
        ) from None


@dataclass(frozen=True)
class Region:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Layout:
    """Where the boot-control copies and every (slot, component) region live."""

    geometry: Geometry
    components: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.components or len(set(self.components)) != len(self.components):
            raise UsageError("a device needs one or more distinct components")

    @property
    def meta_copies(self) -> tuple[Region, Region]:
        s = self.geometry.sector_size
        return Region(0, s), Region(s, s)

    def slot(self, letter: str, component: str) -> Region:
        if letter not in SLOTS:
            raise ValueError(f"no slot {letter!r}")
        index = SLOTS.index(letter) * len(self.components) + self.components.index(component)
        size = self.geometry.slot_size
        return Region(2 * self.geometry.sector_size + index * size, size)

    @property
    def size(self) -> int:
        return 2 * self.geometry.sector_size + 2 * len(self.components) * self.geometry.slot_size
