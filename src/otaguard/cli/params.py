"""Click options that several commands declare alike, declared once so that they agree.

Why: a flag spelt two ways (``--load-addr`` and ``--load-address`` once) or a ``--json``
that one command lacks is what a user trips on; one definition per option keeps the
name, the destination and the help the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``--json``: the result as one JSON object on stdout (``as_json``).
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
#: ``--ca DIR``: an existing CA directory (``ca_dir``).
CA_DIR = click.option(
    "--ca", "ca_dir", required=True, type=click.Path(file_okay=False, exists=True)
)
#: ``--out-dir DIR``: where a new CA or signer directory is made (``out_dir``).
OUT_DIR = click.option("--out-dir", required=True, type=click.Path(file_okay=False))


def new_key_options(default_algorithm: str) -> Callable[[F], F]:
    """``--key`` (an existing key, file or URI, else a new one of ``--algorithm``) and its
    ``--passphrase-env``: the key a new certificate certifies (``pki init-root``, ``issue-*``)."""

    from otaguard.crypto.keys import KeyType  # only the pki commands pay for it

    def decorate(func: F) -> F:
        func = click.option(
            "--passphrase-env", metavar="VAR", help="Passphrase for the new key (or of --key)."
        )(func)
        func = click.option(
            "--algorithm",
            type=click.Choice([k.value for k in KeyType]),
            default=default_algorithm,
            show_default=True,
            help="Algorithm of the key generated when --key is not given.",
        )(func)
        func = click.option(
            "--key",
            "key",
            default=None,
            help="Existing key file or PKCS#11 URI (else a new key is made).",
        )(func)
        return func

    return decorate
