"""Policy: what a verifier *requires* of an authentic image, apart from authenticity.

Cryptographic validity (signatures, threshold, digest) says who made an
image; policy says whether this device or operator wants it. Keeping the two
apart (as sigstore-python does) means a policy change can never weaken the
signature checks, and every policy decision is made only on metadata that
has already been authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass

from otaguard.errors import HardwareIdError, PolicyError, SecurityCounterError
from otaguard.image.envelope_format import ImageMetadata, PayloadKind


@dataclass(frozen=True)
class ImagePolicy:
    """Requirements on authenticated metadata.

    ``hardware_id``: the device's hardware id; the image must list it.
    ``min_security_counter``: the device's anti-rollback floor. The image's
    counter must be ``>=`` it, or ``>`` with ``strict_counter`` (see
    docs/device.md for why ``>=`` is the default).
    ``allowed_kinds``: which payload kinds are acceptable here (a device
    installing a full image must not be handed a delta under its name).
    """

    hardware_id: str | None = None
    min_security_counter: int | None = None
    strict_counter: bool = False
    allowed_kinds: frozenset[PayloadKind] = frozenset(PayloadKind)


def check_policy(meta: ImageMetadata, policy: ImagePolicy) -> None:
    """Raise a :class:`PolicyError` subclass if ``meta`` does not meet ``policy``."""
    if policy.hardware_id is not None and policy.hardware_id not in meta.hardware_ids:
        raise HardwareIdError(
            f"image is for {', '.join(meta.hardware_ids)}, not {policy.hardware_id}"
        )
    floor = policy.min_security_counter
    if floor is not None:
        if policy.strict_counter and meta.security_counter <= floor:
            raise SecurityCounterError(
                f"security counter {meta.security_counter} is not above {floor} (rollback)"
            )
        if meta.security_counter < floor:
            raise SecurityCounterError(
                f"security counter {meta.security_counter} is below {floor} (rollback)"
            )
    if meta.payload_kind not in policy.allowed_kinds:
        raise PolicyError(f"payload kind {meta.payload_kind.name.lower()} not accepted here")
