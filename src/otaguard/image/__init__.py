"""Signed image formats: otaguard's native envelope and MCUboot's format.

Pure formats and verification: no network, no database, no clock. Parsing
returns unverified values; ``verify_*`` returns verified ones or raises.

Names are loaded on first use (PEP 562), so that verifying an MCUboot image
does not load the envelope's code and the reverse: start-up time is most of
what a command-line verification of a small image costs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~8 ms to import: the verify prefetch imports image.sniff
if TYPE_CHECKING:
    from typing import Any

    from otaguard.image.any_format import verify_any
    from otaguard.image.envelope_format import Digest, HashAlgorithm, ImageMetadata, SignatureEntry
    from otaguard.image.envelope_sign import sign_stream
    from otaguard.image.envelope_verify import (
        UnverifiedEnvelope,
        VerifiedImage,
        inspect_stream,
        verify_stream,
    )
    from otaguard.image.kinds import PayloadKind
    from otaguard.image.policy import ImagePolicy, check_policy
    from otaguard.image.trust import TrustedKeys

_WHERE = {
    "Digest": "envelope_format",
    "HashAlgorithm": "envelope_format",
    "ImageMetadata": "envelope_format",
    "SignatureEntry": "envelope_format",
    "sign_stream": "envelope_sign",
    "UnverifiedEnvelope": "envelope_verify",
    "VerifiedImage": "envelope_verify",
    "inspect_stream": "envelope_verify",
    "verify_stream": "envelope_verify",
    "PayloadKind": "kinds",
    "ImagePolicy": "policy",
    "check_policy": "policy",
    "TrustedKeys": "trust",
    "verify_any": "any_format",
}

__all__ = [
    "Digest",
    "HashAlgorithm",
    "ImageMetadata",
    "ImagePolicy",
    "PayloadKind",
    "SignatureEntry",
    "TrustedKeys",
    "UnverifiedEnvelope",
    "VerifiedImage",
    "check_policy",
    "inspect_stream",
    "sign_stream",
    "verify_any",
    "verify_stream",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'otaguard.image' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"otaguard.image.{module}"), name)
    globals()[name] = value
    return value
