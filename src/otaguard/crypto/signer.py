"""Signers: anything that can produce a signature for a public key.

The image formats depend only on the :class:`Signer` protocol, so a key held
in a file, in an HSM (PKCS#11) or on a remote signing service all plug in the
same way, and private key material never has to reach the format code.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from otaguard.crypto.keys import PrivateKey, PublicKey, key_id
from otaguard.crypto.schemes import SignatureScheme, hash_for_scheme, pss_padding, scheme_for_key


class Signer(Protocol):
    """What the formats need from a signing key."""

    @property
    def public_key(self) -> PublicKey: ...

    @property
    def scheme(self) -> SignatureScheme: ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` with the scheme of :attr:`scheme`."""
        ...

    def sign_prehashed(self, digest: bytes) -> bytes:
        """Sign a message given only its digest (not for Ed25519)."""
        ...


class KeySigner:
    """A :class:`Signer` over a private key held in this process."""

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self._scheme = scheme_for_key(self._public)

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def scheme(self) -> SignatureScheme:
        return self._scheme

    @property
    def private_key(self) -> PrivateKey:
        """The key itself, for libraries (X.509 builders) that must hold it."""
        return self._key

    @property
    def key_id(self) -> str:
        return key_id(self._public)

    def sign(self, message: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algo = hash_for_scheme(self._scheme)
            assert algo is not None
            return key.sign(message, ec.ECDSA(algo))
        return key.sign(message, pss_padding(), hashes.SHA256())

    def sign_prehashed(self, digest: bytes) -> bytes:
        key = self._key
        algo = hash_for_scheme(self._scheme)
        if algo is None or isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("Ed25519 cannot sign a prehashed message")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest, ec.ECDSA(Prehashed(algo)))
        return key.sign(digest, pss_padding(), Prehashed(algo))
