"""``otaguard tuf-client``: the tuf-conformance client CLI, on :mod:`otaguard.repo`.

::

    otaguard tuf-client --metadata-dir DIR init TRUSTED_ROOT
    otaguard tuf-client --metadata-dir DIR --metadata-url URL refresh
    otaguard tuf-client --metadata-dir DIR --metadata-url URL \\
        --target-name NAME [--target-name NAME ...] \\
        --target-base-url URL --target-dir DIR download

Unlike the rest of otaguard, this command's exit status is exactly 0 on
success and exactly 1 on every failure, usage errors included: that is the
protocol the conformance suite speaks. The arguments are therefore parsed
here, by a private click group run in non-standalone mode, so that a usage
error becomes 1 instead of the usual 2. A failure is what otaguard expects
to meet: a refusal, a network or file error, a bad argument. Anything else
is a bug in otaguard, not a verdict on the repository: exit 3, one line, and
the traceback with ``--debug``.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import click
from tuf.api.exceptions import RepositoryError

from otaguard.cli.reporting import EXIT_BUG, one_line
from otaguard.errors import OtaguardError
from otaguard.repo.client import ClientRefusal, TufClient, install_trusted_root
from otaguard.repo.fetcher import HttpxFetcher

EXIT_OK = 0
EXIT_FAIL = 1

#: What a failure is (exit 1); any other exception is a bug (exit 3).
EXPECTED = (OtaguardError, RepositoryError, OSError)

_PROG = "otaguard tuf-client"


@click.group(name="tuf-client", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--metadata-dir", help="Trusted metadata directory (required).")
@click.option("--metadata-url", help="Base URL of the repository's metadata.")
@click.option("--target-name", "target_names", multiple=True, help="Target path (repeatable).")
@click.option("--target-base-url", help="Base URL of the repository's targets.")
@click.option("--target-dir", help="Where verified targets are stored.")
@click.option("-v", "--verbose", count=True, help="More logging (repeatable).")
@click.option("--debug", is_flag=True, help="Print the traceback of an internal error.")
@click.pass_context
def _group(
    ctx: click.Context,
    metadata_dir: str | None,
    metadata_url: str | None,
    target_names: tuple[str, ...],
    target_base_url: str | None,
    target_dir: str | None,
    verbose: int,
    debug: bool,
) -> None:
    """TUF client (tuf-conformance CLI protocol). Exit 0 on success, 1 on any failure.

    Exit 3 is a bug in otaguard (--debug prints its traceback).
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="otaguard tuf-client: %(levelname)s %(message)s")
    ctx.obj["debug"] = debug  # read by run_tuf_client after the command is gone
    ctx.obj |= {
        "metadata_dir": metadata_dir,
        "metadata_url": metadata_url,
        "target_names": target_names,
        "target_base_url": target_base_url,
        "target_dir": target_dir,
    }


def _need(ctx: click.Context, key: str, option: str) -> str:
    value = ctx.obj[key]
    if not value:
        raise click.UsageError(f"{option} is required for {ctx.info_name}")
    assert isinstance(value, str)
    return value


@_group.command()
@click.argument("trusted_root", type=click.Path(dir_okay=False))
@click.pass_context
def init(ctx: click.Context, trusted_root: str) -> None:
    """Install TRUSTED_ROOT as the trust anchor (no network access)."""
    metadata_dir = _need(ctx, "metadata_dir", "--metadata-dir")
    install_trusted_root(metadata_dir, trusted_root)
    click.echo(f"{_PROG}: initialized {metadata_dir}", err=True)


@_group.command()
@click.pass_context
def refresh(ctx: click.Context) -> None:
    """Update the top-level metadata from --metadata-url."""
    metadata_dir = _need(ctx, "metadata_dir", "--metadata-dir")
    url = _need(ctx, "metadata_url", "--metadata-url")
    with HttpxFetcher() as fetcher:
        TufClient(metadata_dir, url, fetcher).refresh()
    click.echo(f"{_PROG}: refreshed {metadata_dir}", err=True)


@_group.command()
@click.pass_context
def download(ctx: click.Context) -> None:
    """Refresh, then download and verify every --target-name, in order."""
    metadata_dir = _need(ctx, "metadata_dir", "--metadata-dir")
    url = _need(ctx, "metadata_url", "--metadata-url")
    base = _need(ctx, "target_base_url", "--target-base-url")
    target_dir = _need(ctx, "target_dir", "--target-dir")
    names: tuple[str, ...] = ctx.obj["target_names"]
    if not names:
        raise click.UsageError("--target-name is required for download")
    with HttpxFetcher() as fetcher:
        client = TufClient(metadata_dir, url, fetcher)
        for name, path in client.download_targets(names, base, target_dir):
            click.echo(f"{_PROG}: {name} -> {path}", err=True)


def run_tuf_client(args: list[str]) -> int:
    """Run the client on ``args``; return 0, 1 (failure) or 3 (a bug), never raise."""
    state: dict[str, Any] = {}
    try:
        _group.main(args=args, prog_name=_PROG, standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:  # --help
        return EXIT_OK if exc.exit_code == 0 else EXIT_FAIL
    except click.ClickException as exc:
        click.echo(f"{_PROG}: error: {one_line(exc.format_message())}", err=True)
        return EXIT_FAIL
    except click.exceptions.Abort:
        click.echo(f"{_PROG}: aborted", err=True)
        return EXIT_FAIL
    except EXPECTED as exc:  # every failure is exit 1, reported in one line
        kind = "" if isinstance(exc, ClientRefusal) else f"{type(exc).__name__}: "  # says it all
        click.echo(f"{_PROG}: failed: {kind}{one_line(str(exc))}", err=True)
        return EXIT_FAIL
    except Exception as exc:
        if state.get("debug"):
            traceback.print_exception(exc)
        click.echo(
            f"{_PROG}: internal error (a bug, please report; --debug shows where): "
            f"{type(exc).__name__}: {one_line(str(exc))}",
            err=True,
        )
        return EXIT_BUG
    return EXIT_OK


@click.command(
    name="tuf-client",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tuf_client(args: tuple[str, ...]) -> int:
    """TUF client for tuf-conformance (exit 0 success, 1 any failure; see --help)."""
    return run_tuf_client(list(args))
