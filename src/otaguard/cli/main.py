"""The ``otaguard`` command: click's group, and the one place where its errors become exit codes.

Exit codes and messages are defined in :mod:`otaguard.cli.reporting` (0 ok, 1 refused by a
security check, 2 usage or I/O error, 3 a bug); every error is one line on stderr, never a
traceback. Ctrl-C and SIGTERM end a command the same way (its unfinished output removed),
with exit 130 and 143. Sub-commands import the library lazily, and a plain ``otaguard
verify`` does not even import click (:mod:`otaguard.cli.fastpath`): start-up is most of
what a verification of a small image costs.
"""

from __future__ import annotations

import sys

import click

from otaguard import __version__
from otaguard.cli import fastpath
from otaguard.cli.reporting import EXIT_OK, EXIT_USAGE, Terminated, one_line, report

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
    "audit": "otaguard.cli.audit_cmd:audit",
    "sim": "otaguard.cli.sim_cmd:sim",
    "server": "otaguard.cli.server_cmd:server",
    "fleet": "otaguard.cli.fleet_cmd:fleet",
    "agent": "otaguard.cli.agent_cmd:agent",
    "fleet-agents": "otaguard.cli.fleet_agents_cmd:fleet_agents",
}


class _Interrupted(Exception):
    """Carries Ctrl-C or SIGTERM past click, which would print a blank line and exit 2.

    :func:`otaguard.cli.reporting.report` finds the interrupt behind it.
    """


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (a KeyboardInterrupt) in the main thread.

    Why: killed by the default action, a command leaves its temporary output behind
    (as large as the output). Raised instead, it unwinds through the atomic writer,
    which removes it. A second SIGTERM during that clean-up kills at once (the
    default is restored first). Only for the process's own command line: in-process
    callers (tests, a server) keep their own signal handling.
    """
    import signal

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use (start-up time)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted() from exc

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return (and exit with) its exit code."""
    raise_on_sigterm()
    code = run(argv)
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    code = fastpath.run(args)
    return run_click(args) if code is None else code


def run_click(args: list[str]) -> int:
    """The command line through click (what the fast path leaves to it)."""
    try:
        result = cli.main(args=args, prog_name="otaguard", standalone_mode=False)
        return int(result) if isinstance(result, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click's word for Ctrl-C
            return report(exc.__cause__)
        click.echo("otaguard: aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"otaguard: error: {one_line(exc.format_message())} (see --help)", err=True)
        return EXIT_USAGE
    except (Exception, KeyboardInterrupt) as exc:
        return report(exc)


if __name__ == "__main__":  # pragma: no cover
    main()
