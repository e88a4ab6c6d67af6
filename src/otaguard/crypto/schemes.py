"""Signature schemes: the exact algorithm, hash and padding behind each wire id.

Every parameter is fixed here and nowhere else, so that the signer, the
verifier and the documented ``openssl`` commands cannot drift apart:

======  ==================  ==============================================
wire id name                what is computed
======  ==================  ==============================================
1       ed25519             pure Ed25519 (RFC 8032) over the message
2       ecdsa-p256-sha256   ECDSA P-256, SHA-256, DER (r, s) signature
3       ecdsa-p384-sha384   ECDSA P-384, SHA-384, DER (r, s) signature
4       rsa-pss-sha256      RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32
======  ==================  ==============================================

The scheme is a function of the key: a verifier never lets the signature
entry choose a weaker variant for a trusted key (no algorithm confusion).
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from otaguard.crypto.keys import PublicKey
from otaguard.errors import SignatureError

#: PSS salt length, as MCUboot and imgtool use it (equal to the SHA-256 size).
PSS_SALT_LENGTH = 32


class SignatureScheme(enum.IntEnum):
    """Wire ids of the signature schemes; values are stable on disk."""

    ED25519 = 1
    ECDSA_P256_SHA256 = 2
    ECDSA_P384_SHA384 = 3
    RSA_PSS_SHA256 = 4

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    SignatureScheme.ED25519: "ed25519",
    SignatureScheme.ECDSA_P256_SHA256: "ecdsa-p256-sha256",
    SignatureScheme.ECDSA_P384_SHA384: "ecdsa-p384-sha384",
    SignatureScheme.RSA_PSS_SHA256: "rsa-pss-sha256",
}


def scheme_for_key(key: PublicKey) -> SignatureScheme:
    """The one scheme a key of this type signs with."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return SignatureScheme.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name == "secp256r1":
            return SignatureScheme.ECDSA_P256_SHA256
        if key.curve.name == "secp384r1":
            return SignatureScheme.ECDSA_P384_SHA384
        raise ValueError(f"unsupported curve {key.curve.name}")
    if isinstance(key, rsa.RSAPublicKey):
        return SignatureScheme.RSA_PSS_SHA256
    raise ValueError(f"unsupported key type {type(key).__name__}")


def hash_for_scheme(scheme: SignatureScheme) -> hashes.HashAlgorithm | None:
    """The hash a scheme applies to the message; None for pure Ed25519."""
    if scheme is SignatureScheme.ECDSA_P384_SHA384:
        return hashes.SHA384()
    if scheme is SignatureScheme.ED25519:
        return None
    return hashes.SHA256()


def pss_padding() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


def verify_signature(
    key: PublicKey, scheme: SignatureScheme, message: bytes, signature: bytes
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``key``'s over ``message``.

    ``scheme`` must be the key's own scheme; a mismatch is a rejection, not a
    fallback, so that an attacker cannot pick the algorithm.
    """
    if scheme_for_key(key) is not scheme:
        raise SignatureError(f"signature scheme {scheme.label} does not match the key")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algo = hash_for_scheme(scheme)
            assert algo is not None
            key.verify(signature, message, ec.ECDSA(algo))
        else:
            key.verify(signature, message, pss_padding(), hashes.SHA256())
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify") from exc


def verify_prehashed(
    key: PublicKey, scheme: SignatureScheme, digest: bytes, signature: bytes
) -> None:
    """Like :func:`verify_signature` when only the message's digest is at hand.

    Used for formats (MCUboot) where the signed region is large and streamed.
    Ed25519 has no prehashed form and is refused here.
    """
    if scheme_for_key(key) is not scheme:
        raise SignatureError(f"signature scheme {scheme.label} does not match the key")
    algo = hash_for_scheme(scheme)
    if algo is None:
        raise ValueError("Ed25519 cannot verify a prehashed message")
    if len(digest) != algo.digest_size:
        raise SignatureError("digest length does not match the signature scheme")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(algo)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, pss_padding(), Prehashed(algo))
        else:
            raise ValueError("Ed25519 cannot verify a prehashed message")
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify") from exc
