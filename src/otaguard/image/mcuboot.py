"""MCUboot image support: the public face of ``mcuboot_format/_sign/_verify``.

Kept apart from the native envelope because the two formats share nothing on
the wire; they share the :class:`Signer` protocol, :class:`TrustedKeys`,
:class:`ImagePolicy` and the error types, so callers treat them alike.
"""

from __future__ import annotations

from otaguard.image.mcuboot_format import (
    IMAGE_MAGIC,
    Dependency,
    Header,
    McubootVersion,
    TlvType,
    parse_dependency,
    parse_security_counter,
    parse_version,
)
from otaguard.image.mcuboot_sign import McubootSigned, McubootSignOptions, sign_mcuboot
from otaguard.image.mcuboot_verify import (
    McubootImage,
    McubootKeyResolver,
    VerifiedMcuboot,
    check_mcuboot_policy,
    describe_tlvs,
    read_image,
    verify_mcuboot,
)

__all__ = [
    "IMAGE_MAGIC",
    "Dependency",
    "Header",
    "McubootImage",
    "McubootKeyResolver",
    "McubootSignOptions",
    "McubootSigned",
    "McubootVersion",
    "TlvType",
    "VerifiedMcuboot",
    "check_mcuboot_policy",
    "describe_tlvs",
    "parse_dependency",
    "parse_security_counter",
    "parse_version",
    "read_image",
    "sign_mcuboot",
    "verify_mcuboot",
]
