"""MCUboot image format (being written)."""

from __future__ import annotations

import struct

IMAGE_MAGIC = 0x96F3B83D


def looks_like_mcuboot(head: bytes) -> bool:
    """True if ``head`` starts with MCUboot's header magic (either byte order)."""
    return len(head) >= 4 and IMAGE_MAGIC in (
        struct.unpack("<I", head[:4])[0],
        struct.unpack(">I", head[:4])[0],
    )
