"""One entry point for "a key argument": a key file or a PKCS#11 URI.

Every command that signs takes its keys through :func:`load_signer`, so an HSM
key can be used wherever a key file can, with nothing else to change.
"""

from __future__ import annotations

from otaguard._files import read_bounded
from otaguard.crypto.keys import PrivateKey, PublicKey, load_private_key, load_public_key
from otaguard.crypto.pkcs11 import Pkcs11Signer, is_pkcs11_uri
from otaguard.crypto.signer import KeySigner, Signer
from otaguard.errors import KeyLoadError

MAX_KEY_FILE = 1 << 20


def read_key_file(path: str) -> bytes:
    return read_bounded(path, MAX_KEY_FILE, "key file")


def load_signer(spec: str, passphrase: bytes | None = None) -> Signer:
    """A signer for ``spec``: ``pkcs11:...`` URIs go to the token, anything else is a file."""
    if is_pkcs11_uri(spec):
        return Pkcs11Signer(spec)
    try:
        return KeySigner(load_private_key(read_key_file(spec), passphrase))
    except KeyLoadError as exc:
        raise KeyLoadError(f"{spec}: {exc}") from exc


def load_private_key_file(path: str, passphrase: bytes | None) -> PrivateKey:
    """The private key in a key file (not a URI: for a key's bytes, not a signer)."""
    try:
        return load_private_key(read_key_file(path), passphrase)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def load_public_key_file(path: str) -> PublicKey:
    """The public key in a file (PEM or DER, or a certificate's), named in any refusal."""
    try:
        return load_public_key(read_key_file(path))
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def public_key_of(spec: str, passphrase: bytes | None = None) -> PublicKey:
    """The public half of a key argument: a PKCS#11 URI, a private key file (``passphrase``
    if encrypted) or a public key file; a refusal names the file."""
    if is_pkcs11_uri(spec):
        with Pkcs11Signer(spec) as signer:
            return signer.public_key
    data = read_key_file(spec)
    if b"PRIVATE KEY" in data:
        return load_private_key_file(spec, passphrase).public_key()
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        try:  # a DER private key, which has no header to tell
            return load_private_key_file(spec, passphrase).public_key()
        except KeyLoadError:
            raise KeyLoadError(f"{spec}: {exc}") from exc
