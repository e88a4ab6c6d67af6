"""Policy: what a verifier *requires* of an authentic image, apart from authenticity.

Cryptographic validity (signatures, threshold, digest) says who made an
image; policy says whether this device or operator wants it. Keeping the two
apart (as sigstore-python does) means a policy change can never weaken the
signature checks, and every policy decision is made only on metadata that
has already been authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from otaguard.errors import HardwareIdError, PolicyError, SecurityCounterError, VersionError
from otaguard.image.kinds import PayloadKind

if TYPE_CHECKING:
    from otaguard.image.envelope_format import ImageMetadata


@dataclass(frozen=True)
class ImagePolicy:
    """Requirements on authenticated metadata.

    ``hardware_id``: the device's hardware id; the image must list it.
    ``min_security_counter``: the device's anti-rollback floor. The image's
    counter must be ``>=`` it, or ``>`` with ``strict_counter`` (see
    docs/device.md for why ``>=`` is the default).
    ``min_version``: release policy on the version string (semver precedence
    for the envelope; major.minor.revision for MCUboot, as its bootloader
    compares). Anti-rollback itself is the counter's job, not this one's.
    ``allowed_kinds``: which payload kinds are acceptable here (a device
    installing a full image must not be handed a delta under its name).
    """

    hardware_id: str | None = None
    min_security_counter: int | None = None
    strict_counter: bool = False
    allowed_kinds: frozenset[PayloadKind] = frozenset(PayloadKind)
    min_version: str | None = None


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
    if policy.min_version is not None:
        from otaguard.image.semver import parse_semver

        wanted = parse_semver(policy.min_version)
        if parse_semver(meta.version).precedence_key() < wanted.precedence_key():
            raise VersionError(f"version {meta.version} is older than {policy.min_version}")
    if meta.payload_kind not in policy.allowed_kinds:
        raise PolicyError(f"payload kind {meta.payload_kind.name.lower()} not accepted here")


def policy_for(
    fmt: str,
    *,
    hardware_id: str | None = None,
    min_security_counter: int | None = None,
    min_version: str | None = None,
) -> ImagePolicy:
    """A verifier's policy options, checked for the image's format ``fmt``.

    Why the format: a version floor is read with the format's own version syntax
    (semver for the envelope, major.minor.revision+build for MCUboot), so a floor
    the format cannot compare is refused up front rather than never matching.
    """
    from otaguard.errors import MalformedError, UsageError

    if min_security_counter is not None and min_security_counter < 0:
        raise UsageError("--min-security-counter must not be negative")
    if min_version is not None:
        if fmt == "mcuboot":
            from otaguard.image.mcuboot_format import parse_version

            parse_version(min_version)
        else:
            from otaguard.image.semver import parse_semver

            try:
                parse_semver(min_version)
            except MalformedError as exc:
                raise UsageError(f"--min-version: {exc}") from None
    return ImagePolicy(
        hardware_id=hardware_id,
        min_security_counter=min_security_counter,
        min_version=min_version,
    )
