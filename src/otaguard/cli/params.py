"""Click options that several commands declare alike, declared once so that they agree.

Why: a flag spelt two ways (``--load-addr`` and ``--load-address`` once) or a ``--json``
that one command lacks is what a user trips on; one definition per option keeps the
name, the destination and the help the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from otaguard.cli.verify_args import Option

F = TypeVar("F", bound=Callable[..., Any])

#: ``--json``: the result as one JSON object on stdout (``as_json``).
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def ca_dir(help: str | None = None) -> Callable[[F], F]:
    """``--ca DIR``: an existing CA directory (``ca_dir``); ``help`` says which CA."""
    path = click.Path(file_okay=False, exists=True)
    return click.option("--ca", "ca_dir", required=True, type=path, help=help)


CA_DIR = ca_dir()
#: ``--new-root DIR``: the directory of the root that replaces the one of ``--ca``.
NEW_ROOT = click.option("--new-root", required=True, type=click.Path(file_okay=False, exists=True))
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


def apply(options: Sequence[Callable[[F], F]]) -> Callable[[F], F]:
    """Several options as one decorator, shown in ``--help`` in the order given."""

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


class RenamedOption(click.Option):
    """An option whose first name is the one shown; later ones are old spellings, still
    accepted so that scripts keep working, but not offered in ``--help``."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        names, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = names


def from_table(option: Option) -> Callable[[F], F]:
    """The click form of one option of ``verify_args`` (both parsers read one table)."""
    if option.kind == "flag":
        return click.option(option.flag, option.dest, is_flag=True, help=option.help)
    kinds: dict[str, Any] = {
        "path": click.Path(dir_okay=False),
        "text": None,
        "int": int,
        "choice": click.Choice(option.choices),
    }
    return click.option(
        option.flag,
        option.dest,
        multiple=option.multiple,
        type=kinds[option.kind],
        default=option.default,
        show_default=option.show_default,
        help=option.help,
    )


def verify_options(func: F) -> F:
    """Every option of ``otaguard verify`` (also read by ``extract``), from its one table."""
    from otaguard.cli.verify_args import VERIFY_OPTIONS

    return apply([from_table(option) for option in VERIFY_OPTIONS])(func)


def _flash_op(flag: str, help: str) -> Callable[[F], F]:
    """An option naming one flash operation of the event, counting from 0."""
    return click.option(flag, type=click.IntRange(0), default=None, metavar="N", help=help)


#: ``--power-cut-at``, ``--tear-at`` and the tear's fill: the faults of a ``device`` event.
FAULT_OPTIONS = apply(
    [
        _flash_op("--power-cut-at", "Lose power before flash operation N (0-based)."),
        _flash_op(
            "--tear-at", "Lose power half-way through flash operation N: only a prefix lands."
        ),
        click.option(
            "--tear-fill",
            type=click.Choice(["old", "random"]),
            default="random",
            show_default=True,
            help="What the rest of a torn operation reads back as.",
        ),
        click.option("--tear-seed", type=int, default=0, show_default=True, hidden=True),
        JSON,
    ]
)
