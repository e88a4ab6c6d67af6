"""Verifying an image file: its format, the verifier's policy options, the report.

Why here: ``otaguard verify`` and ``extract`` (and any other caller) take an image file
and a verifier; how the format is found, what the policy options are checked against
and what the report says are decided once. The verifier itself is a parameter: bare
trusted keys (:func:`key_verifier`, here) or roots with CRLs
(``otaguard.pki.verify_file.root_verifier``, a layer up), so the fast path with bare
keys loads no PKI code at all.

Imports are lazy and ``typing`` is not imported at run time: this runs on the fast
path of ``otaguard verify``, whose start-up is most of a small image's verification.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time: keep it off the fast path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from otaguard.image.any_format import VerifiedAny
    from otaguard.image.policy import ImagePolicy
    from otaguard.image.trust import PrecomputedDigest, TrustedKeys

    #: (stream, format, policy, sink, precomputed digest) -> (result, extra report fields)
    Verifier = Callable[
        [BinaryIO, str, ImagePolicy, BinaryIO | None, PrecomputedDigest | None],
        tuple[VerifiedAny, dict[str, Any]],
    ]


def key_verifier(trusted: TrustedKeys, threshold: int) -> Verifier:
    """Verification against bare trusted keys, ``threshold`` of them."""

    def verify(
        stream: BinaryIO,
        fmt: str,
        policy: ImagePolicy,
        sink: BinaryIO | None,
        digest: PrecomputedDigest | None,
    ) -> tuple[VerifiedAny, dict[str, Any]]:
        from otaguard.image.any_format import verify_any

        result = verify_any(
            stream,
            trusted,
            threshold=threshold,
            policy=policy,
            fmt=fmt,
            sink=sink,
            unsafe_precomputed_digest=digest,
        )
        return result, {}

    return verify


def verify_file(
    path: str,
    verifier: Verifier,
    *,
    fmt: str = "auto",
    hardware_id: str | None = None,
    min_security_counter: int | None = None,
    min_version: str | None = None,
    sink: BinaryIO | None = None,
    unsafe_precomputed_digest: PrecomputedDigest | None = None,
) -> dict[str, Any]:
    """Verify the image at ``path`` (stdin for ``-``); its report, or the refusal raised.

    ``sink`` receives the payload as it is hashed (trustworthy only if this returns);
    ``unsafe_precomputed_digest`` is UNSAFE unless proved (see
    :data:`~otaguard.image.trust.PrecomputedDigest`).
    """
    from otaguard._stdio import open_input
    from otaguard.image.any_format import format_of
    from otaguard.image.describe import verified_fields
    from otaguard.image.policy import policy_for

    with open_input(path) as stream:
        fmt = format_of(stream, fmt)
        policy = policy_for(
            fmt,
            hardware_id=hardware_id,
            min_security_counter=min_security_counter,
            min_version=min_version,
        )
        result, extra = verifier(stream, fmt, policy, sink, unsafe_precomputed_digest)
    report: dict[str, Any] = {"verified": True, "format": fmt, "signed_by": list(result.signed_by)}
    report.update(extra)
    report.update(verified_fields(result))
    return report
