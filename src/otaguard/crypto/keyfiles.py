"""A new key pair written to files (or made inside an HSM), never over what must not be lost.

Why in the library: whoever makes release keys (``otaguard key generate`` today, a key
ceremony script or the server's bootstrap tomorrow) must refuse the same outputs before
any key exists. A private key file is never replaced silently (``force`` says so), the
private and public outputs may not be one file (the private key would be lost), and
``-`` is refused: key material never goes to a terminal or a pipe by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from otaguard._atomic import check_output, write_atomic
from otaguard._stdio import STDIO
from otaguard.crypto.keys import KeyType, PublicKey
from otaguard.errors import UsageError


@dataclass(frozen=True)
class GeneratedKey:
    """The new key's public half, and whether it lives in an HSM (else in ``out``)."""

    public_key: PublicKey
    in_hsm: bool
    #: The private key's place as it may be shown: the file, or the URI without its PIN.
    where: str


def check_key_outputs(out: str, public_out: str | None, *, force: bool = False) -> bool:
    """Refuse outputs a new key must not go to; whether ``out`` is an HSM (``pkcs11:``).

    A caller may run it before asking for a passphrase; :func:`generate_key_files`
    runs it again in any case.
    """
    from otaguard.crypto.pkcs11 import is_pkcs11_uri

    in_hsm = is_pkcs11_uri(out)
    outputs = [p for p in (None if in_hsm else out, public_out) if p is not None]
    if STDIO in outputs:
        raise UsageError("key generate writes key files only ('-' is not stdout here)")
    if len({os.path.realpath(p) for p in outputs}) != len(outputs):
        raise UsageError("--out and --public-out are the same file: the private key would be lost")
    for path in outputs:  # before the key is made: nothing to undo after a refusal
        check_output(path, overwrite=force)
    return in_hsm


def generate_key_files(
    algorithm: KeyType,
    out: str,
    *,
    public_out: str | None = None,
    passphrase: bytes | None = None,
    force: bool = False,
) -> GeneratedKey:
    """Generate a key into ``out`` (a PKCS#8 PEM file, mode 0600, or a ``pkcs11:`` URI).

    Every output is checked before the key is made, so a refusal leaves nothing to undo.
    ``public_out`` also receives the public key (PEM). ``passphrase`` encrypts a file key.
    """
    from otaguard.crypto.keys import generate_private_key, private_key_pem, public_key_pem
    from otaguard.crypto.pkcs11 import generate_pkcs11_key, parse_pkcs11_uri

    in_hsm = check_key_outputs(out, public_out, force=force)
    if in_hsm:
        public_key = generate_pkcs11_key(out, algorithm)
        where = parse_pkcs11_uri(out).without_pin()
    else:
        private = generate_private_key(algorithm)
        write_atomic(out, private_key_pem(private, passphrase), mode=0o600, overwrite=force)
        public_key, where = private.public_key(), out
    if public_out:
        write_atomic(public_out, public_key_pem(public_key), overwrite=force)
    return GeneratedKey(public_key, in_hsm, where)
