"""Verifying images signed under the PKI: the chain in the envelope, anchored in a root.

The image's CERT_CHAIN (leaf first; MCUboot: otaguard's vendor TLVs) is
validated against the trusted roots at the image's signing time (see
``validate.py`` for why), the leaf's key becomes the one key that must have
signed the image, and the chain's constraints are applied to the image's
hardware ids and the verifier's region. The rest of verification (signature,
policy, digest) is the format's verifier's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from cryptography import x509

from otaguard.crypto.keys import check_supported
from otaguard.errors import ConstraintError, KeyLoadError, MalformedError
from otaguard.image import ImageMetadata, ImagePolicy, TrustedKeys, VerifiedImage, verify_stream
from otaguard.image.any_format import verify_any
from otaguard.image.mcuboot_verify import McubootImage
from otaguard.image.trust import PrecomputedDigest
from otaguard.pki.validate import (
    ValidatedChain,
    check_image_constraints,
    validate_code_signing_chain,
)

if TYPE_CHECKING:
    from otaguard.image.any_format import VerifiedAny


def signing_time(meta: ImageMetadata) -> dt.datetime:
    return dt.datetime.fromtimestamp(meta.created, tz=dt.UTC)


def chain_of(meta: ImageMetadata) -> list[x509.Certificate]:
    return _load_chain(meta.cert_chain)


def _load_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    certs = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise MalformedError("the image's certificate chain is not valid DER") from exc
    return certs


def validate_image_chain(
    meta: ImageMetadata,
    roots: Sequence[x509.Certificate],
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    region: str | None = None,
) -> ValidatedChain:
    chain = validate_code_signing_chain(chain_of(meta), roots, at=signing_time(meta), crls=crls)
    check_image_constraints(chain, meta.hardware_ids, region)
    return chain


def validate_mcuboot_chain(
    image: McubootImage,
    roots: Sequence[x509.Certificate],
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    region: str | None = None,
) -> ValidatedChain:
    """The same rules for an MCUboot image's chain (otaguard's vendor TLVs).

    MCUboot has no signing time of its own, so an image signed under a
    certificate must carry otaguard's creation-time TLV; and a chain limited
    to some hardware ids only covers images that name their hardware ids.
    """
    if image.cert_chain and image.created is None:
        raise MalformedError("MCUboot image has a certificate chain but no signing time TLV")
    at = dt.datetime.fromtimestamp(image.created or 0, tz=dt.UTC)
    chain = validate_code_signing_chain(_load_chain(image.cert_chain), roots, at=at, crls=crls)
    if chain.hardware_ids is not None and not image.hardware_ids:
        raise ConstraintError("the signer's chain is limited to hardware ids; the image names none")
    check_image_constraints(chain, image.hardware_ids, region)
    return chain


def _signer_keys(chain: ValidatedChain) -> TrustedKeys:
    """The one key that must have signed an image: its validated chain's leaf's."""
    try:
        return TrustedKeys.of([check_supported(chain.leaf.public_key())])
    except KeyLoadError as exc:
        raise MalformedError(f"signer certificate: {exc}") from exc


def verify_image_with_roots(
    stream: BinaryIO,
    roots: Sequence[x509.Certificate],
    *,
    policy: ImagePolicy,
    crls: Sequence[x509.CertificateRevocationList] = (),
    region: str | None = None,
) -> tuple[VerifiedImage, ValidatedChain]:
    """Verify an envelope whose signer is certified under one of ``roots``."""
    validated: list[ValidatedChain] = []

    def resolve(meta: ImageMetadata) -> TrustedKeys:
        chain = validate_image_chain(meta, roots, crls=crls, region=region)
        validated.append(chain)
        return _signer_keys(chain)

    result = verify_stream(stream, resolve, threshold=1, policy=policy)
    return result, validated[0]


@dataclass(frozen=True)
class TrustedRoots:
    """Trust through the PKI: root certificates, the CRLs to apply, the verifier's region."""

    roots: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    region: str | None = None


def verify_any_with_roots(
    stream: BinaryIO,
    trusted: TrustedRoots,
    *,
    policy: ImagePolicy,
    fmt: str | None = None,
    sink: BinaryIO | None = None,
    unsafe_precomputed_digest: PrecomputedDigest | None = None,
) -> tuple[VerifiedAny, ValidatedChain]:
    """:func:`~otaguard.image.any_format.verify_any` of an image of either format whose
    signer is certified under one of ``trusted.roots``; also returns the validated chain."""
    validated: list[ValidatedChain] = []

    def resolve(parsed: ImageMetadata | McubootImage) -> TrustedKeys:
        if isinstance(parsed, McubootImage):
            chain = validate_mcuboot_chain(
                parsed, trusted.roots, crls=trusted.crls, region=trusted.region
            )
        else:
            chain = validate_image_chain(
                parsed, trusted.roots, crls=trusted.crls, region=trusted.region
            )
        validated.append(chain)
        return _signer_keys(chain)

    result = verify_any(
        stream,
        resolve,
        threshold=1,
        policy=policy,
        fmt=fmt,
        sink=sink,
        unsafe_precomputed_digest=unsafe_precomputed_digest,
    )
    return result, validated[0]
