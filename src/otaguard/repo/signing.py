"""Repository keys: otaguard signers (key files, PKCS#11 URIs) as securesystemslib signers.

python-tuf signs metadata through securesystemslib's ``Signer``. :class:`RepoSigner`
wraps an otaguard :class:`~otaguard.crypto.signer.Signer`, so the same key
argument (a file or a ``pkcs11:`` URI) signs images and TUF metadata, and an
HSM key never leaves its token. A key argument may also name a *public* key
file (:func:`load_key_arg`): the repository then records the key but cannot
sign with it (offline release managers sign later with ``repo sign``).
"""

from __future__ import annotations

from dataclasses import dataclass

from securesystemslib.signer import Key, SecretsHandler, Signature, Signer, SSlibKey

from otaguard.crypto.keys import PublicKey, load_private_key, load_public_key
from otaguard.crypto.loader import load_signer, read_key_file
from otaguard.crypto.pkcs11 import is_pkcs11_uri
from otaguard.crypto.schemes import SignatureScheme, scheme_for_key
from otaguard.crypto.signer import KeySigner
from otaguard.crypto.signer import Signer as OtaguardSigner
from otaguard.errors import KeyLoadError

#: securesystemslib's scheme name for each otaguard scheme. Our RSA-PSS uses a
#: salt of the digest length (32), which securesystemslib's verifier (PSS AUTO)
#: accepts.
TUF_SCHEMES = {
    SignatureScheme.ED25519: "ed25519",
    SignatureScheme.ECDSA_P256_SHA256: "ecdsa-sha2-nistp256",
    SignatureScheme.ECDSA_P384_SHA384: "ecdsa-sha2-nistp384",
    SignatureScheme.RSA_PSS_SHA256: "rsassa-pss-sha256",
}


def tuf_key(public_key: PublicKey) -> SSlibKey:
    """The TUF key (with its TUF key id) for an otaguard public key."""
    return SSlibKey.from_crypto(public_key, scheme=TUF_SCHEMES[scheme_for_key(public_key)])


class RepoSigner(Signer):
    """A securesystemslib ``Signer`` signing with an otaguard ``Signer``."""

    def __init__(self, signer: OtaguardSigner) -> None:
        self._signer = signer
        self._key = SSlibKey.from_crypto(signer.public_key, scheme=TUF_SCHEMES[signer.scheme])

    @property
    def public_key(self) -> Key:
        return self._key

    @property
    def keyid(self) -> str:
        return str(self._key.keyid)

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._key.keyid, self._signer.sign(payload).hex())

    def close(self) -> None:
        close = getattr(self._signer, "close", None)
        if callable(close):
            close()

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> Signer:
        """securesystemslib's loader hook: ``priv_key_uri`` is an otaguard key argument.

        A key file path or a ``pkcs11:`` URI; the secrets handler, if any, supplies the
        passphrase of an encrypted key file. The key must be ``public_key``: a URI that
        names another key is an error, never a silent substitution.
        """
        passphrase = None
        if secrets_handler is not None and not is_pkcs11_uri(priv_key_uri):
            passphrase = secrets_handler("passphrase").encode() or None
        signer = load_repo_signer(priv_key_uri, passphrase)
        if signer.public_key.keyid != public_key.keyid:
            raise KeyLoadError(f"{priv_key_uri} is not the key {public_key.keyid}")
        return signer


def load_repo_signer(spec: str, passphrase: bytes | None = None) -> RepoSigner:
    """A signer for a private key file or a ``pkcs11:`` URI."""
    return RepoSigner(load_signer(spec, passphrase))


@dataclass(frozen=True)
class KeyArg:
    """A key argument: always a TUF public key, and a signer when the private key is at hand."""

    key: SSlibKey
    signer: RepoSigner | None

    @property
    def keyid(self) -> str:
        return str(self.key.keyid)


def load_key_arg(spec: str, passphrase: bytes | None = None) -> KeyArg:
    """A private key file, a ``pkcs11:`` URI or a public key file (recorded, cannot sign)."""
    if is_pkcs11_uri(spec):
        signer = load_repo_signer(spec, passphrase)
    else:
        data = read_key_file(spec)
        try:
            private = load_private_key(data, passphrase)
        except KeyLoadError as exc:
            try:
                public = load_public_key(data)
            except KeyLoadError:
                raise KeyLoadError(f"{spec}: {exc}") from exc
            return KeyArg(tuf_key(public), None)
        signer = RepoSigner(KeySigner(private))
    key = signer.public_key
    assert isinstance(key, SSlibKey)
    return KeyArg(key, signer)
