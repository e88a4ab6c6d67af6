"""The certificate chain a signer embeds in an image: leaf first, and the leaf is the signer's.

Why a check at signing time: a verifier takes the chain's first certificate as the
one key that must have signed the image (``pki/image_trust.py``), so an image whose
chain starts with another key's certificate can never verify. Refusing it when it
is signed, not on every device later, is the point.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard.crypto.keys import PublicKey, key_id_bytes
from otaguard.errors import KeyLoadError, UsageError


def chain_for_signer(certs: Sequence[x509.Certificate], signer_key: PublicKey) -> list[bytes]:
    """``certs`` as DER, after checking that the first one certifies ``signer_key``.

    Raises :class:`UsageError` when it does not (or the chain is empty), and
    :class:`KeyLoadError` when the first certificate's key cannot be read.
    """
    if not certs:
        raise UsageError("the certificate chain holds no certificate")
    try:
        leaf_key = certs[0].public_key()
    except ValueError as exc:  # parseable X.509 around a broken key
        raise KeyLoadError(f"the chain's first certificate has an unreadable key: {exc}") from None
    if key_id_bytes(leaf_key) != key_id_bytes(signer_key):  # type: ignore[arg-type]
        raise UsageError("the chain's first certificate is not the signing key's certificate")
    return [c.public_bytes(Encoding.DER) for c in certs]
