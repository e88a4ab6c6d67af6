"""``otaguard key``: generate keys and show public keys with their key ids."""

from __future__ import annotations

import click

from otaguard.cli.common import load_private_key_file, passphrase_from_env, read_small_file

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

    passphrase = passphrase_from_env(passphrase_env)
    private = generate_private_key(KeyType(algorithm))
    write_atomic(out, private_key_pem(private, passphrase), mode=0o600)
    if public_out:
        write_atomic(public_out, public_key_pem(private.public_key()))
    click.echo(f"{algorithm} key {key_id(private.public_key())} written to {out}")


@key.command("public")
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the public key here.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted private key.")
def public(key_file: str, out: str | None, passphrase_env: str | None) -> None:
    """Print the public key of KEY_FILE (private or public) and its key id."""
    from otaguard._atomic import write_atomic
    from otaguard.crypto.keys import describe_key, key_id, load_public_key, public_key_pem

    data = read_small_file(key_file, "key file")
    if b"PRIVATE KEY" in data or passphrase_env:
        pub = load_private_key_file(key_file, passphrase_from_env(passphrase_env)).public_key()
    else:
        from otaguard.errors import KeyLoadError

        try:
            pub = load_public_key(data)
        except KeyLoadError:
            pub = load_private_key_file(key_file, None).public_key()
    pem = public_key_pem(pub)
    if out:
        write_atomic(out, pem)
    click.echo(pem.decode(), nl=False)
    click.echo(f"key id: {key_id(pub)} ({describe_key(pub)})")
