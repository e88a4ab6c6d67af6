"""Verifying an image file against trusted roots (with CRLs and a region).

The file handling, the policy options and the report are ``otaguard.image.verify_file``'s;
this module supplies the verifier that needs the PKI (a validated certificate chain,
reported as ``certificate_chain``) and reads roots and CRLs from files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from otaguard.image.any_format import VerifiedAny
    from otaguard.image.policy import ImagePolicy
    from otaguard.image.trust import PrecomputedDigest
    from otaguard.image.verify_file import Verifier
    from otaguard.pki.image_trust import TrustedRoots


def trusted_roots_from_files(
    roots: tuple[str, ...], crls: tuple[str, ...], region: str | None
) -> TrustedRoots:
    """The roots (each file may hold several certificates), their CRLs and the region."""
    from otaguard.pki.image_trust import TrustedRoots
    from otaguard.pki.store import read_certs, read_crl

    certs = tuple(c for path in roots for c in read_certs(path, "trusted root"))
    return TrustedRoots(certs, tuple(read_crl(path) for path in crls), region)


def root_verifier(trusted: TrustedRoots) -> Verifier:
    """Verification whose signer is certified by one of ``trusted``'s roots."""

    def verify(
        stream: BinaryIO,
        fmt: str,
        policy: ImagePolicy,
        sink: BinaryIO | None,
        digest: PrecomputedDigest | None,
    ) -> tuple[VerifiedAny, dict[str, Any]]:
        from otaguard.pki.image_trust import verify_any_with_roots

        result, chain = verify_any_with_roots(
            stream, trusted, policy=policy, fmt=fmt, sink=sink, unsafe_precomputed_digest=digest
        )
        return result, {"certificate_chain": [c.subject.rfc4514_string() for c in chain.path]}

    return verify
