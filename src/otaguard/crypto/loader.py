"""One entry point for "a key argument": a key file or a PKCS#11 URI.

Every command that signs takes its keys through :func:`load_signer`, so an HSM
key can be used wherever a key file can, with nothing else to change.
"""

from __future__ import annotations

from otaguard.crypto.keys import load_private_key
from otaguard.crypto.pkcs11 import Pkcs11Signer, is_pkcs11_uri
from otaguard.crypto.signer import KeySigner, Signer
from otaguard.errors import KeyLoadError, StorageError, UsageError

MAX_KEY_FILE = 1 << 20


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise StorageError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE:
        raise UsageError(f"key file {path} is larger than {MAX_KEY_FILE} bytes")
    return data


def load_signer(spec: str, passphrase: bytes | None = None) -> Signer:
    """A signer for ``spec``: ``pkcs11:...`` URIs go to the token, anything else is a file."""
    if is_pkcs11_uri(spec):
        return Pkcs11Signer(spec)
    try:
        return KeySigner(load_private_key(read_key_file(spec), passphrase))
    except KeyLoadError as exc:
        raise KeyLoadError(f"{spec}: {exc}") from exc
