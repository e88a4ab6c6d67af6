"""Verifying images signed under the PKI: the chain in the envelope, anchored in a root.

The image's CERT_CHAIN (leaf first) is validated against the trusted roots at
the image's signing time (see ``validate.py`` for why), the leaf's key becomes
the one key that must have signed the image, and the chain's constraints are
applied to the image's hardware ids and the verifier's region. The rest of
verification (signature, policy, digest) is the envelope verifier's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import BinaryIO

from cryptography import x509

from otaguard.crypto.keys import check_supported
from otaguard.errors import KeyLoadError, MalformedError
from otaguard.image import ImageMetadata, ImagePolicy, TrustedKeys, VerifiedImage, verify_stream
from otaguard.pki.validate import (
    ValidatedChain,
    check_image_constraints,
    validate_code_signing_chain,
)


def signing_time(meta: ImageMetadata) -> dt.datetime:
    return dt.datetime.fromtimestamp(meta.created, tz=dt.UTC)


def chain_of(meta: ImageMetadata) -> list[x509.Certificate]:
    certs = []
    for der in meta.cert_chain:
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
        try:
            leaf_key = check_supported(chain.leaf.public_key())
        except KeyLoadError as exc:
            raise MalformedError(f"signer certificate: {exc}") from exc
        return TrustedKeys.of([leaf_key])

    result = verify_stream(stream, resolve, threshold=1, policy=policy)
    return result, validated[0]
