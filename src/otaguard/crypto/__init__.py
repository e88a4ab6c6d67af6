"""Keys, signature schemes and signers: the bottom layer, with no knowledge of images."""

from __future__ import annotations

from otaguard.crypto.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)
from otaguard.crypto.schemes import SignatureScheme, scheme_for_key, verify_signature
from otaguard.crypto.signer import KeySigner, Signer

__all__ = [
    "KeySigner",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "SignatureScheme",
    "Signer",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "scheme_for_key",
    "verify_signature",
]
