"""The ``otaguard`` command: the one place where errors become messages and exit codes.

Exit codes (the same for every sub-command):

* 0 -- success.
* 1 -- refused by a security check (:class:`otaguard.errors.RejectedError`).
* 2 -- usage error, bad configuration, unreadable key, I/O error.
* 3 -- a bug in otaguard (an unexpected exception); reported in one line too.

Every error is one line on stderr, never a traceback. Sub-commands import
the library lazily so that ``otaguard verify`` starts fast.
"""

from __future__ import annotations

import sys

import click

from otaguard import __version__
from otaguard.errors import OtaguardError, RejectedError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_BUG = 3


#: Sub-command -> "module:attribute". Imported only when that command runs, so
#: ``otaguard verify`` does not pay for the PKI, device or server code.
LAZY_COMMANDS = {
    "key": "otaguard.cli.keys:key",
    "pki": "otaguard.cli.pki_cmd:pki",
    "device": "otaguard.cli.device_cmd:device",
    "sign": "otaguard.cli.images:sign",
    "verify": "otaguard.cli.images:verify",
    "inspect": "otaguard.cli.images:inspect",
    "extract": "otaguard.cli.images:extract",
    "tuf-client": "otaguard.cli.tuf_client:tuf_client",
    "repo": "otaguard.cli.repo_cmd:repo",
    "delta": "otaguard.cli.delta_cmd:delta",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use (start-up time)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otaguard")
def cli() -> None:
    """otaguard: sign, verify and safely deliver firmware updates."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return (and exit with) its exit code."""
    code = run(argv)
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="otaguard", standalone_mode=False)
        return int(result) if isinstance(result, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("otaguard: aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"otaguard: error: {_one_line(exc.format_message())} (see --help)", err=True)
        return EXIT_USAGE
    except RejectedError as exc:
        click.echo(f"otaguard: rejected ({exc.check}): {_one_line(str(exc))}", err=True)
        return EXIT_REJECTED
    except OtaguardError as exc:
        click.echo(f"otaguard: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"otaguard: error: {where}{exc.strerror or exc}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("otaguard: interrupted", err=True)
        return 130
    except Exception as exc:  # the last line of defence: never a traceback
        click.echo(
            f"otaguard: internal error (a bug, please report): "
            f"{type(exc).__name__}: {_one_line(str(exc))}",
            err=True,
        )
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    main()
