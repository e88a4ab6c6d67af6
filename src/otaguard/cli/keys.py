"""``otaguard key``: generate keys and show public keys with their key ids.

A key file is never replaced silently: an existing ``--out`` or ``--public-out``
needs ``--force``, and no output may be one of the inputs (``key public K --out K``
would replace a private key by its public half), nor the other output.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

from otaguard.cli import audit_log
from otaguard.cli.common import STDIO, one_stdout, passphrase_from_env
from otaguard.crypto.keys import KeyType
from otaguard.crypto.loader import public_key_of
from otaguard.errors import UsageError

if TYPE_CHECKING:
    pass

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
    from otaguard._atomic import check_output, write_atomic
    from otaguard.crypto.keys import generate_private_key, key_id, private_key_pem, public_key_pem
    from otaguard.crypto.pkcs11 import generate_pkcs11_key, is_pkcs11_uri, parse_pkcs11_uri

    in_hsm = is_pkcs11_uri(out)
    outputs = [p for p in (None if in_hsm else out, public_out) if p is not None]
    if STDIO in outputs:
        raise UsageError("key generate writes key files only ('-' is not stdout here)")
    if len({os.path.realpath(p) for p in outputs}) != len(outputs):
        raise UsageError("--out and --public-out are the same file: the private key would be lost")
    for path in outputs:  # before the key is made: nothing to undo after a refusal
        check_output(path, overwrite=force)
    if in_hsm:
        public_key = generate_pkcs11_key(out, KeyType(algorithm))
        if public_out:
            write_atomic(public_out, public_key_pem(public_key), overwrite=force)
        where = parse_pkcs11_uri(out).without_pin()
        click.echo(f"{algorithm} key {key_id(public_key)} generated inside {where}")
        return
    passphrase = passphrase_from_env(passphrase_env)
    private = generate_private_key(KeyType(algorithm))
    write_atomic(out, private_key_pem(private, passphrase), mode=0o600, overwrite=force)
    if public_out:
        write_atomic(public_out, public_key_pem(private.public_key()), overwrite=force)
    click.echo(f"{algorithm} key {key_id(private.public_key())} written to {out}")


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
