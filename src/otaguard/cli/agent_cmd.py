"""``otaguard agent``: the device's update agent (factory provisioning, and the update loop).

``agent run`` prints what the agent does: a progress bar on stderr when stderr
is a terminal, otherwise one JSON object per line on stdout (``{"time",
"event", ...}``: events for the server, phase changes, failures and their
retries), for a log collector. ``--once`` exits 0 when the device is up to
date or was updated, 1 when an update was refused (or reverted by the
device), 2 on usage or I/O errors, or when the server or the network stayed
unreachable through every retry.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from otaguard.errors import StorageError, UsageError


@click.group()
def agent() -> None:
    """The device's update agent: check in, verify, download, install, confirm, report."""


@agent.command("provision")
@click.option("--device-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--repo-root",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The image repository's root metadata (e.g. metadata/1.root.json).",
)
@click.option(
    "--director-root",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The director's root metadata (the server's director-root.json).",
)
def provision_cmd(device_dir: Path, repo_root: str, director_root: str) -> None:
    """Install the trust anchors of a device at the factory (never trust on first use)."""
    from otaguard._files import read_bounded
    from otaguard.agent.store import MAX_ROOT, provision

    repository = read_bounded(repo_root, MAX_ROOT, "repository root")
    director = read_bounded(director_root, MAX_ROOT, "director root")
    if provision(device_dir, repository, director):
        click.echo(
            f"device {device_dir}: trust anchors provisioned (repository and director roots)"
        )
    else:
        click.echo(f"device {device_dir}: already provisioned with these trust anchors")


class JsonLines:
    """One JSON object per line on stdout."""

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = {"time": now, "event": event, **fields}
        sys.stdout.write(json.dumps(line, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def progress(self, target: str, done: int, total: int) -> None:
        pass  # chunks are not events: a log line per chunk would drown the rest

    def close(self) -> None:
        pass


class RichProgress:
    """A progress bar per download on stderr, and a short line per step."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
        )
        self._tasks: dict[str, Any] = {}
        self._progress.start()

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        if event == "event":
            text = f"{fields.get('kind')} {fields.get('target') or ''} {fields.get('detail') or ''}"
        else:
            text = f"{event} " + " ".join(f"{k}={v}" for k, v in fields.items())
        self._progress.console.log(text.strip(), markup=False, highlight=False)

    def progress(self, target: str, done: int, total: int) -> None:
        task = self._tasks.get(target)
        if task is None:
            task = self._tasks[target] = self._progress.add_task(target, total=total)
        self._progress.update(task, completed=done)

    def close(self) -> None:
        self._progress.stop()


def _health_command(command: str) -> Any:
    """A health check that runs COMMAND (exit 0 = healthy), told the slot in OTAGUARD_SLOT."""
    argv = shlex.split(command)

    def check(device: Any, running: Any) -> bool:
        import os

        env = {**os.environ, "OTAGUARD_SLOT": running.slot}
        try:
            return subprocess.run(argv, env=env, check=False, timeout=300).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    return check


def _load_config(path: str | None) -> Any:
    from otaguard.agent.config import AgentConfig, config_from_json

    if path is None:
        return AgentConfig()
    from otaguard._files import read_bounded

    try:
        return config_from_json(json.loads(read_bounded(path, 1 << 20, "agent configuration")))
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc


@agent.command("run")
@click.option("--device-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--server", required=True, help="The fleet server's URL, e.g. http://127.0.0.1:8080")
@click.option(
    "--identity",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The device identity directory (otaguard pki issue-device).",
)
@click.option("--once", is_flag=True, help="One check-in and what it brings, then exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between check-ins (default: what the server says, else 900).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="JSON file overriding the agent's caps, timeouts and retry rules.",
)
@click.option("--health-cmd", help="Command run on the new firmware's trial; exit 0 confirms it.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of the identity key.")
def run_cmd(
    device_dir: Path,
    server: str,
    identity: Path,
    once: bool,
    interval: float | None,
    config_file: str | None,
    health_cmd: str | None,
    passphrase_env: str | None,
) -> int:
    """Run the update agent for the device in DEVICE_DIR."""
    from otaguard.agent.runner import Agent
    from otaguard.agent.state import Result
    from otaguard.agent.store import load_identity
    from otaguard.cli.common import passphrase_from_env
    from otaguard.device.faults import PowerLoss

    if not server.startswith(("http://", "https://")):
        raise UsageError("--server must be an http:// or https:// URL")
    config = _load_config(config_file)
    ident = load_identity(identity, passphrase_from_env(passphrase_env))
    observer: JsonLines | RichProgress = RichProgress() if sys.stderr.isatty() else JsonLines()
    health = _health_command(health_cmd) if health_cmd else None
    try:
        with Agent(device_dir, server, ident, config=config, observer=observer, health=health) as a:
            if not once:
                a.run_forever(interval)
                return 0
            result = a.run_cycle()
    except PowerLoss as cut:  # only with a fault plan (simulation)
        raise StorageError(f"the device lost power: {cut}") from None
    finally:
        observer.close()
    if result in (Result.UP_TO_DATE, Result.UPDATED, Result.ABANDONED):
        return 0  # abandoned: the server halted the campaign; the device is as it was
    if result in (Result.REFUSED, Result.REVERTED, Result.INCOMPATIBLE):
        click.echo(f"otaguard: the update was {result.value} (see the events above)", err=True)
        return 1
    raise StorageError("the update did not complete: the server or the network failed every retry")
