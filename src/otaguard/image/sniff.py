"""Which image format a file holds, and where its signed bytes lie, from its first bytes.

One place for what four modules used to work out by hand (the CLI's verify, the
repository's add-target, the verify prefetch and the delta predictor). Nothing
here is verified: :func:`layout` reads what an image's first bytes *claim*, for
uses where a wrong answer can only cost speed or size (the prefetch hashes a
range the verifier then compares with what it parsed; the predictor only aims
better or worse); :func:`detect` picks the parser, which checks everything.

Standard library only, and nothing imported that the interpreter has not
loaded already: the prefetch calls :func:`layout` before it forks, and every
millisecond before the fork is a millisecond added to a large verification.
(``otaguard.errors`` is imported by :func:`detect` when it raises.)
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing costs ~8 ms to import: keep it off the start-up path
if TYPE_CHECKING:
    from typing import Final

NATIVE: Final = "native"
MCUBOOT: Final = "mcuboot"

NATIVE_MAGIC = b"OTAGUARD"
#: MCUboot's image magic 0x96f3b83d, little- and big-endian (``imgtool --endian``).
MCUBOOT_MAGIC_LE = bytes.fromhex("3db8f396")
MCUBOOT_MAGIC_BE = bytes.fromhex("96f3b83d")
#: :func:`detect` needs this many bytes (fewer only if the file is shorter).
DETECT_SIZE = len(NATIVE_MAGIC)
#: :func:`layout` needs this many bytes.
LAYOUT_SIZE = 64

#: The envelope's PAYLOAD_DIGEST algorithms (``envelope_format.HashAlgorithm``), by value.
_NATIVE_DIGESTS = {1: "sha256", 2: "sha512"}
#: PAYLOAD_LENGTH and PAYLOAD_DIGEST, always the first two TLVs (``envelope_format``):
#: type 1, length 8, then type 2 (its length and the algorithm byte follow).
_LENGTH_TLV = b"\x00\x01\x00\x00\x00\x08"
_DIGEST_TLV = b"\x00\x02"


def detect(head: bytes) -> str:
    """:data:`NATIVE` or :data:`MCUBOOT` by the magic number at the start of ``head``.

    ``head``: the first :data:`DETECT_SIZE` bytes of the file (all of it if shorter).
    Raises :class:`~otaguard.errors.TruncatedError` or
    :class:`~otaguard.errors.MalformedError` for anything else, and nothing else.
    """
    if head[: len(NATIVE_MAGIC)] == NATIVE_MAGIC:
        return NATIVE
    if head[:4] in (MCUBOOT_MAGIC_LE, MCUBOOT_MAGIC_BE):
        return MCUBOOT
    from otaguard.errors import MalformedError, TruncatedError

    if len(head) < len(NATIVE_MAGIC):
        raise TruncatedError("truncated: too short to be an image")
    raise MalformedError("neither an otaguard nor an MCUboot image (unknown magic)")


class Layout:
    """Where an image's payload and digested bytes are, as its first bytes claim (unverified).

    ``digest_offset``/``digest_length``: the bytes the signed digest covers (the
    envelope: the payload; MCUboot: header, payload and protected TLVs).
    ``digest_algorithm``: hashlib's name, or ``None`` where the header does not
    say (MCUboot names it in the TLV area, after the payload).
    """

    # A plain class, not a dataclass: importing dataclasses before the prefetch's fork
    # would cost more start-up than the prefetch saves on small images.
    __slots__ = (
        "digest_algorithm",
        "digest_length",
        "digest_offset",
        "format",
        "payload_length",
        "payload_offset",
    )

    def __init__(
        self,
        format: str,
        payload_offset: int,
        payload_length: int,
        digest_offset: int,
        digest_length: int,
        digest_algorithm: str | None,
    ) -> None:
        self.format, self.payload_offset, self.payload_length = (
            format,
            payload_offset,
            payload_length,
        )
        self.digest_offset, self.digest_length = digest_offset, digest_length
        self.digest_algorithm = digest_algorithm

    def __repr__(self) -> str:
        return (
            f"Layout({self.format}, payload {self.payload_offset}+{self.payload_length}, "
            f"digest {self.digest_algorithm} of {self.digest_offset}+{self.digest_length})"
        )


def layout(head: bytes) -> Layout | None:
    """What ``head`` (the first :data:`LAYOUT_SIZE` bytes of a file) says of its layout.

    ``None`` when it is no image, or too short to tell; never raises.
    """
    if head[:8] == NATIVE_MAGIC and len(head) >= 38:
        if head[16:22] != _LENGTH_TLV or head[30:32] != _DIGEST_TLV:
            return None
        (header_len,) = struct.unpack(">I", head[12:16])
        (length,) = struct.unpack(">Q", head[22:30])
        algorithm = _NATIVE_DIGESTS.get(head[36])
        if algorithm is None:
            return None
        offset = 16 + header_len
        return Layout(NATIVE, offset, length, offset, length, algorithm)
    if len(head) >= 16 and head[:4] in (MCUBOOT_MAGIC_LE, MCUBOOT_MAGIC_BE):
        order = "<" if head[:4] == MCUBOOT_MAGIC_LE else ">"
        hdr_size, protected_size, img_size = struct.unpack(order + "HHI", head[8:16])
        return Layout(MCUBOOT, hdr_size, img_size, 0, hdr_size + img_size + protected_size, None)
    return None
