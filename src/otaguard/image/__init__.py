"""Signed image formats: otaguard's native envelope and MCUboot's format.

Pure formats and verification: no network, no database, no clock. Parsing
returns unverified values; ``verify_*`` returns verified ones or raises.
"""

from __future__ import annotations

from otaguard.image.envelope_format import (
    Digest,
    HashAlgorithm,
    ImageMetadata,
    PayloadKind,
    SignatureEntry,
)
from otaguard.image.envelope_sign import sign_stream
from otaguard.image.envelope_verify import (
    TrustedKeys,
    UnverifiedEnvelope,
    VerifiedImage,
    inspect_stream,
    verify_stream,
)
from otaguard.image.policy import ImagePolicy, check_policy

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
    "verify_stream",
]
