"""otaguard signers (key files, PKCS#11 HSM keys) as securesystemslib signers, for TUF metadata.

python-tuf signs through securesystemslib's ``Signer``; wrapping ours means
the same key argument (a file or a ``pkcs11:`` URI) works for images,
certificates and TUF metadata alike, and HSM keys never leave the token.
"""

from __future__ import annotations

from securesystemslib.signer import Key, SecretsHandler, Signature, Signer, SSlibKey

from otaguard.crypto.schemes import SignatureScheme
from otaguard.crypto.signer import Signer as OtaguardSigner

#: securesystemslib's scheme for each of our schemes. Our RSA-PSS salt (32,
#: the digest length) is what securesystemslib's verifier accepts.
TUF_SCHEMES = {
    SignatureScheme.ED25519: "ed25519",
    SignatureScheme.ECDSA_P256_SHA256: "ecdsa-sha2-nistp256",
    SignatureScheme.ECDSA_P384_SHA384: "ecdsa-sha2-nistp384",
    SignatureScheme.RSA_PSS_SHA256: "rsa-pss-sha256",
}


def tuf_key(signer: OtaguardSigner) -> SSlibKey:
    """The TUF public key (and key id) of an otaguard signer."""
    return SSlibKey.from_crypto(signer.public_key, scheme=TUF_SCHEMES[signer.scheme])


class TufSigner(Signer):
    """A securesystemslib ``Signer`` that signs with an otaguard ``Signer``."""

    def __init__(self, signer: OtaguardSigner) -> None:
        self._signer = signer
        self._key = tuf_key(signer)

    @property
    def public_key(self) -> Key:
        return self._key

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._key.keyid, self._signer.sign(payload).hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> Signer:
        raise NotImplementedError("load keys with otaguard.crypto.loader.load_signer")
