"""``otaguard key``: generate keys and show public keys with their key ids.

A key file is never replaced silently: an existing ``--out`` or ``--public-out``
needs ``--force``, and no output may be one of the inputs (``key public K --out K``
would replace a private key by its public half), nor the other output.
"""

from __future__ import annotations

import json

import click

from otaguard.cli import audit_log
from otaguard.cli.common import one_stdout, passphrase_from_env
from otaguard.crypto.keys import KeyType
from otaguard.crypto.loader import public_key_of

_ALGORITHMS = [k.value for k in KeyType]
_FORCE = click.option("--force", is_flag=True, help="Replace existing output files.")


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
    help="Private key file (PKCS#8 PEM, mode 0600), or a pkcs11: URI.",
)
@click.option("--public-out", type=click.Path(dir_okay=False), help="Also write the public key.")
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Encrypt the key with the passphrase in environment variable VAR.",
)
@_FORCE
@audit_log.audited(audit_log.key_generated)
def generate(
    algorithm: str, out: str, public_out: str | None, passphrase_env: str | None, force: bool
) -> None:
    """Generate a private key (an existing file is replaced only with --force)."""
    from otaguard.crypto.keyfiles import check_key_outputs, generate_key_files
    from otaguard.crypto.keys import key_id

    in_hsm = check_key_outputs(out, public_out, force=force)
    passphrase = None if in_hsm else passphrase_from_env(passphrase_env)
    new = generate_key_files(
        KeyType(algorithm), out, public_out=public_out, passphrase=passphrase, force=force
    )
    where = f"generated inside {new.where}" if new.in_hsm else f"written to {out}"
    click.echo(f"{algorithm} key {key_id(new.public_key)} {where}")


@key.command("public")
@click.argument("key_file")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the public key here ('-': stdout, the key id then goes to stderr).",
)
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted private key.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its id as JSON.")
@_FORCE
def public(
    key_file: str, out: str | None, passphrase_env: str | None, as_json: bool, force: bool
) -> None:
    """Print the public key of KEY_FILE (private, public or PKCS#11 URI) and its key id."""
    from otaguard._atomic import check_output, write_atomic
    from otaguard.crypto.keys import describe_key, key_id, public_key_pem

    stdout = out is not None and one_stdout(as_json, out, "--out -")
    if out is not None and not stdout:
        check_output(out, inputs=[key_file], overwrite=force)
    pub = public_key_of(key_file, passphrase_from_env(passphrase_env))
    pem = public_key_pem(pub)
    if out is not None and not stdout:
        write_atomic(out, pem, inputs=[key_file], overwrite=force)
    if as_json:
        report = {"key_id": key_id(pub), "algorithm": describe_key(pub), "public_key": pem.decode()}
        click.echo(json.dumps({**report, "out": out}, indent=2, sort_keys=True))
        return
    click.echo(pem.decode(), nl=False)
    click.echo(f"key id: {key_id(pub)} ({describe_key(pub)})", err=stdout)
