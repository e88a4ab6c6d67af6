"""Verifying an image file against either kind of trust: bare keys, or roots with CRLs.

Why here: ``otaguard verify`` and ``extract`` (and any other caller: the agent's
tooling, a release gate) take an image file and either trusted keys or trusted
roots; which verifier runs, how the format is found, what the policy is checked
against and what the report says are one decision, made once. The image layer
cannot make it (roots are the PKI's); this module sits just above it.

Imports are lazy: ``otaguard verify`` with bare keys runs through here on its fast
path and must not load X.509 code it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from otaguard.image.trust import PrecomputedDigest, TrustedKeys
    from otaguard.pki.image_trust import TrustedRoots
    from otaguard.pki.validate import ValidatedChain


def trusted_roots_from_files(
    roots: tuple[str, ...], crls: tuple[str, ...], region: str | None
) -> TrustedRoots:
    """The roots (each file may hold several certificates), their CRLs and the region."""
    from otaguard.pki.image_trust import TrustedRoots
    from otaguard.pki.store import read_certs, read_crl

    certs = tuple(c for path in roots for c in read_certs(path, "trusted root"))
    return TrustedRoots(certs, tuple(read_crl(path) for path in crls), region)


def verify_file(
    path: str,
    trusted: TrustedKeys | TrustedRoots,
    *,
    threshold: int = 1,
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
    from otaguard.image.policy import policy_for
    from otaguard.image.trust import TrustedKeys

    chain: ValidatedChain | None = None
    with open_input(path) as stream:
        fmt = format_of(stream, fmt)
        policy = policy_for(
            fmt,
            hardware_id=hardware_id,
            min_security_counter=min_security_counter,
            min_version=min_version,
        )
        if isinstance(trusted, TrustedKeys):
            from otaguard.image.any_format import verify_any

            result = verify_any(
                stream,
                trusted,
                threshold=threshold,
                policy=policy,
                fmt=fmt,
                sink=sink,
                unsafe_precomputed_digest=unsafe_precomputed_digest,
            )
        else:
            from otaguard.pki.image_trust import verify_any_with_roots

            result, chain = verify_any_with_roots(
                stream,
                trusted,
                policy=policy,
                fmt=fmt,
                sink=sink,
                unsafe_precomputed_digest=unsafe_precomputed_digest,
            )
    from otaguard.image.describe import verified_fields

    report: dict[str, Any] = {"verified": True, "format": fmt, "signed_by": list(result.signed_by)}
    if chain is not None:
        report["certificate_chain"] = [c.subject.rfc4514_string() for c in chain.path]
    report.update(verified_fields(result))
    return report
