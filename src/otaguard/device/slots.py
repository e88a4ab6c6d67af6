"""Images in slots: writing an envelope into a slot, finding its end, verifying it there.

A slot holds the envelope bytes exactly as signed, followed by whatever the
flash held before (erased cells, or the tail of an older, longer image). The
envelope's own structure says where it ends: preamble -> header length,
header -> payload length, signature block -> entry count and lengths. Those
fields are not trusted for anything but finding the end, bounded by the slot
size; verification then re-parses them strictly and authenticates every byte
from the start of the slot to that end, so a wrong end is a failed check, not
a wrong decision.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

from otaguard.device.flash import Flash, FlashReader
from otaguard.device.geometry import Region
from otaguard.device.model import Device
from otaguard.errors import FuseBudgetError, MalformedError, SlotSizeError, TruncatedError
from otaguard.image import ImageMetadata, ImagePolicy, PayloadKind, verify_stream
from otaguard.image.envelope_format import (
    MAX_SIGNATURE_SIZE,
    MAX_SIGNATURES,
    PREAMBLE_SIZE,
    SIG_BLOCK_HEAD,
    SIG_ENTRY_HEAD,
    SIG_MAGIC,
    parse_preamble,
    parse_protected,
)

FULL_ONLY = frozenset({PayloadKind.FULL})


@dataclass(frozen=True)
class SlotImage:
    """A verified image in a slot. ``image_id`` is the SHA-256 of its signed header."""

    component: str
    metadata: ImageMetadata
    image_id: str
    length: int

    def to_json(self) -> dict[str, Any]:
        """What a device reports of an image it holds (``device ... --json``, the agent)."""
        meta = self.metadata
        return {
            "version": meta.version,
            "security_counter": meta.security_counter,
            "image_id": self.image_id,
        }


def envelope_extent(read: Callable[[int, int], bytes], limit: int) -> int:
    """Length of the envelope at offset 0 of a region of ``limit`` bytes."""

    def get(offset: int, n: int) -> bytes:
        if offset + n > limit:
            raise TruncatedError("the image runs past the end of its slot")
        return read(offset, n)

    header_len = parse_preamble(get(0, PREAMBLE_SIZE))
    meta = parse_protected(get(0, PREAMBLE_SIZE + header_len))
    pos = PREAMBLE_SIZE + header_len + meta.payload_length
    magic, count, _reserved = SIG_BLOCK_HEAD.unpack(get(pos, SIG_BLOCK_HEAD.size))
    if magic != SIG_MAGIC or not 1 <= count <= MAX_SIGNATURES:
        raise MalformedError("no signature block after the payload")
    pos += SIG_BLOCK_HEAD.size
    for _ in range(count):
        *_head, length = SIG_ENTRY_HEAD.unpack(get(pos, SIG_ENTRY_HEAD.size))
        if not 1 <= length <= MAX_SIGNATURE_SIZE:
            raise MalformedError("signature entry: length out of range")
        pos += SIG_ENTRY_HEAD.size + length
    if pos > limit:
        raise TruncatedError("the image runs past the end of its slot")
    return pos


def image_id_of(envelope: bytes) -> str:
    """The id :func:`verify_slot` reports for ``envelope``: SHA-256 of its signed header."""
    return hashlib.sha256(envelope[: PREAMBLE_SIZE + parse_preamble(envelope)]).hexdigest()


def extent_in(flash: Flash, region: Region) -> int:
    """Length of the envelope at the start of ``region`` (MalformedError if none)."""
    return envelope_extent(lambda off, n: flash.read(region.offset + off, n), region.size)


def device_policy(device: Device, component: str, *, for_install: bool) -> ImagePolicy:
    """Hardware id, anti-rollback floor and payload kind this device requires.

    The strict (``>``) counter rule applies to installs only: the image a
    device runs has a counter *equal* to its fuses once confirmed, so boot
    must always accept ``>=`` or it would refuse its own firmware.
    """
    return ImagePolicy(
        hardware_id=device.config.component(component).hardware_id,
        min_security_counter=device.otp.counters.value(component),
        strict_counter=for_install and device.config.strict_counter,
        allowed_kinds=FULL_ONLY,
    )


def check_budget(device: Device, component: str, meta: ImageMetadata) -> None:
    """Refuse an image whose counter the fuses can never record (after authentication)."""
    capacity = device.otp.counters.capacity(component)
    if meta.security_counter > capacity:
        have = device.otp.counters.value(component)
        raise FuseBudgetError(
            f"security counter {meta.security_counter} exceeds the fuse budget of {component} "
            f"({capacity} fuses, {capacity - have} left)"
        )


def verify_stream_for(
    device: Device, component: str, stream: BinaryIO, *, for_install: bool
) -> ImageMetadata:
    result = verify_stream(
        stream,
        device.trust.resolver(),
        threshold=1,
        policy=device_policy(device, component, for_install=for_install),
    )
    check_budget(device, component, result.metadata)
    return result.metadata


def verify_slot(device: Device, letter: str, component: str, *, for_install: bool) -> SlotImage:
    """Verify, by streaming from flash, the image in one (slot, component) region."""
    region = device.config.layout.slot(letter, component)
    flash = device.flash
    length = extent_in(flash, region)
    reader = io.BufferedReader(FlashReader(flash, region.offset, length), buffer_size=1 << 16)
    meta = verify_stream_for(device, component, cast(BinaryIO, reader), for_install=for_install)
    header = flash.read(
        region.offset, PREAMBLE_SIZE + parse_preamble(flash.read(region.offset, 16))
    )
    return SlotImage(component, meta, hashlib.sha256(header).hexdigest(), length)


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


def write_image(flash: Flash, region: Region, source: Source, length: int) -> None:
    """Program ``length`` bytes of ``source`` into ``region``, sector by sector.

    A sector that already holds exactly what it would get (its image bytes, then erased
    cells) is left alone; any other is erased, then programmed. So rerunning an install
    after a power cut resumes where the flash is still right: the source is read again
    (a delta decoded again from its start: CPU only) but only what differs is written,
    no flash wear for the rest. Safety does not rest on the order of writes: the install
    made the slot unbootable before this, and commits only after verifying the whole
    image from flash.
    """
    g = flash.geometry
    if length > region.size:
        raise SlotSizeError(f"the image ({length} bytes) does not fit a {region.size}-byte slot")
    pad = bytes([g.erased])
    written = 0
    while written < length:
        n = min(g.sector_size, length - written)
        data = _read_full(source, n)
        start = region.offset + written
        if flash.read(start, g.sector_size) != data + pad * (g.sector_size - n):
            flash.erase_sector(start // g.sector_size)
            for at in range(0, n, g.program_size):
                piece = data[at : at + g.program_size]
                flash.program(start + at, piece + pad * (-len(piece) % g.write_align))
        written += n


def _read_full(source: Source, n: int) -> bytes:
    parts = []
    while n:
        data = source.read(n)
        if not data:
            raise TruncatedError("the image file ended early")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)
