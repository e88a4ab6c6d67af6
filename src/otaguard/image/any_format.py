"""Verifying an image of either format, for callers that accept both.

The CLI's ``verify`` and ``extract``, the repository's ``add-target``, and the
device agent and fleet server after them take native envelopes and MCUboot
images alike. :func:`verify_any` tells the formats apart by their magic number
(:mod:`otaguard.image.sniff`) and runs that format's full verification. What it
returns is that format's own verified value, :class:`~otaguard.image.VerifiedImage`
or :class:`~otaguard.image.mcuboot.VerifiedMcuboot`, told apart by their
``format`` (``"native"`` or ``"mcuboot"``; type checkers narrow on it).

Each format's verifier is imported only when an image of it comes: start-up time
is most of what a command-line verification of a small image costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from otaguard.image import sniff

if TYPE_CHECKING:
    from otaguard.image.envelope_format import ImageMetadata
    from otaguard.image.envelope_verify import VerifiedImage
    from otaguard.image.mcuboot_verify import McubootImage, VerifiedMcuboot
    from otaguard.image.policy import ImagePolicy
    from otaguard.image.trust import PrecomputedDigest, TrustedKeys

    #: A verified image of either format; ``.format`` says which.
    VerifiedAny = VerifiedImage | VerifiedMcuboot
    #: Chooses the trusted keys from either format's parsed, not yet authenticated,
    #: metadata (e.g. by validating the certificate chain it carries). Whatever it returns
    #: must still have signed the image, so it cannot weaken the signature check.
    AnyKeyResolver = Callable[[ImageMetadata | McubootImage], TrustedKeys]


def detect_stream(stream: BinaryIO) -> str:
    """The format of the image at offset 0 of seekable ``stream`` (left at offset 0)."""
    stream.seek(0)
    head = stream.read(sniff.DETECT_SIZE)
    stream.seek(0)
    return sniff.detect(head)


def format_of(stream: BinaryIO, fmt: str) -> str:
    """``fmt`` as a verifier was told it, or for ``auto`` the format the magic number names."""
    return detect_stream(stream) if fmt == "auto" else fmt


def verify_any(
    stream: BinaryIO,
    trusted: TrustedKeys | AnyKeyResolver,
    *,
    threshold: int,
    policy: ImagePolicy,
    fmt: str | None = None,
    sink: BinaryIO | None = None,
    unsafe_precomputed_digest: PrecomputedDigest | None = None,
) -> VerifiedAny:
    """Verify the image at offset 0 of seekable ``stream``, native envelope or MCUboot.

    ``fmt``: :data:`~otaguard.image.sniff.NATIVE` or :data:`~otaguard.image.sniff.MCUBOOT`
    when the caller was told; ``None`` detects it from the magic number. Everything else is
    the format's verifier's (:func:`~otaguard.image.verify_stream`,
    :func:`~otaguard.image.mcuboot.verify_mcuboot`): ``sink`` receives the payload as it is
    hashed (trustworthy only if this returns: make it atomic), and
    ``unsafe_precomputed_digest`` is UNSAFE unless proved (see
    :data:`~otaguard.image.trust.PrecomputedDigest`).
    """
    if fmt is None:
        fmt = detect_stream(stream)
    verify_format: Callable[..., VerifiedAny]
    if fmt == sniff.MCUBOOT:
        from otaguard.image.mcuboot_verify import verify_mcuboot as verify_format
    elif fmt == sniff.NATIVE:
        from otaguard.image.envelope_verify import verify_stream as verify_format
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    stream.seek(0)
    return verify_format(
        stream,
        trusted,
        threshold=threshold,
        policy=policy,
        sink=sink,
        unsafe_precomputed_digest=unsafe_precomputed_digest,
    )
