"""An image's embedded chain must start with the signing key's certificate (pki/signer_chain)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from helpers_pki import make_pki
from otaguard.errors import KeyLoadError, UsageError
from otaguard.pki.signer_chain import chain_for_signer


def test_the_signers_own_chain_is_returned_as_der() -> None:
    pki = make_pki()
    chain = chain_for_signer([pki.leaf.cert, pki.inter.cert], pki.leaf.signer.public_key)
    assert chain == [c.public_bytes(Encoding.DER) for c in (pki.leaf.cert, pki.inter.cert)]


def test_a_chain_that_starts_with_another_keys_certificate_is_refused() -> None:
    pki = make_pki()
    with pytest.raises(UsageError, match="not the signing key's certificate"):
        chain_for_signer([pki.inter.cert, pki.leaf.cert], pki.leaf.signer.public_key)
    with pytest.raises(UsageError, match="no certificate"):
        chain_for_signer([], pki.leaf.signer.public_key)


def test_a_certificate_whose_key_is_broken_is_a_key_error_not_a_crash() -> None:
    """One flipped bit in the EC point: still parseable X.509, no longer a key."""
    pki = make_pki()
    der = bytearray(pki.inter.cert.public_bytes(Encoding.DER))
    spki = pki.inter.cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    der[der.index(spki) + len(spki) - 1] ^= 1
    broken = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(KeyLoadError, match="unreadable key"):
        chain_for_signer([broken], pki.leaf.signer.public_key)
