"""``otaguard key``: generate keys and show public keys with their key ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from otaguard.cli.common import load_private_key_file, passphrase_from_env
from otaguard.crypto.loader import read_key_file

if TYPE_CHECKING:
    from otaguard.crypto.keys import PublicKey

_ALGORITHMS = ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"]


@click.group()
def key() -> None:
    """Generate signing keys and inspect public keys."""


@key.command("generate")
@click.option("--algorithm", "algorithm", type=click.Choice(_ALGORITHMS), required=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Private key file (PKCS#8 PEM, mode 0600).",
)
@click.option("--public-out", type=click.Path(dir_okay=False), help="Also write the public key.")
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Encrypt the key with the passphrase in environment variable VAR.",
)
def generate(algorithm: str, out: str, public_out: str | None, passphrase_env: str | None) -> None:
    """Generate a private key."""
    from otaguard._atomic import write_atomic
    from otaguard.crypto.keys import (
        KeyType,
        generate_private_key,
        key_id,
        private_key_pem,
        public_key_pem,
    )
    from otaguard.crypto.pkcs11 import generate_pkcs11_key, is_pkcs11_uri, parse_pkcs11_uri

    if is_pkcs11_uri(out):
        public_key = generate_pkcs11_key(out, KeyType(algorithm))
        if public_out:
            write_atomic(public_out, public_key_pem(public_key))
        where = parse_pkcs11_uri(out).without_pin()
        click.echo(f"{algorithm} key {key_id(public_key)} generated inside {where}")
        return
    passphrase = passphrase_from_env(passphrase_env)
    private = generate_private_key(KeyType(algorithm))
    write_atomic(out, private_key_pem(private, passphrase), mode=0o600)
    if public_out:
        write_atomic(public_out, public_key_pem(private.public_key()))
    click.echo(f"{algorithm} key {key_id(private.public_key())} written to {out}")


@key.command("public")
@click.argument("key_file")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the public key here.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted private key.")
def public(key_file: str, out: str | None, passphrase_env: str | None) -> None:
    """Print the public key of KEY_FILE (private, public or PKCS#11 URI) and its key id."""
    from otaguard._atomic import write_atomic
    from otaguard.crypto.keys import describe_key, key_id, public_key_pem

    pub = _public_key_of(key_file, passphrase_env)
    pem = public_key_pem(pub)
    if out:
        write_atomic(out, pem)
    click.echo(pem.decode(), nl=False)
    click.echo(f"key id: {key_id(pub)} ({describe_key(pub)})")


def _public_key_of(spec: str, passphrase_env: str | None) -> PublicKey:
    """The public half of a PKCS#11 key, a private key file or a public key file."""
    from otaguard.crypto.keys import load_public_key
    from otaguard.crypto.pkcs11 import Pkcs11Signer, is_pkcs11_uri
    from otaguard.errors import KeyLoadError

    if is_pkcs11_uri(spec):
        with Pkcs11Signer(spec) as signer:
            return signer.public_key
    data = read_key_file(spec)
    if b"PRIVATE KEY" in data or passphrase_env:
        return load_private_key_file(spec, passphrase_from_env(passphrase_env)).public_key()
    try:
        return load_public_key(data)
    except KeyLoadError:
        return load_private_key_file(spec, None).public_key()
