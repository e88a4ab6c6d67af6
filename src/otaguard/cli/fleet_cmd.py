"""``otaguard fleet``: the operators' client of the fleet server's REST API.

Thin: parse, call :class:`otaguard.server.client.FleetClient`, print (a rich
table, or JSON with ``--json``). Exit codes: 0 success; 1 the server refused on
security or policy grounds (401, 403, a refused upload: 422); 2 usage, I/O or
connection errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

MAX_TOKEN_FILE = 4096


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


@click.group("fleet")
@click.option(
    "--server", "server_url", required=True, help="The server's URL, e.g. http://host:8080"
)
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="File holding an operator token (e.g. DATA_DIR/admin.token).",
)
@click.pass_context
def fleet(ctx: click.Context, server_url: str, token_file: str) -> None:
    """Operate a fleet through the server's REST API."""
    ctx.obj = {"server": server_url, "token_file": token_file}


@contextmanager
def _client(ctx: click.Context) -> Iterator[Any]:
    from otaguard._files import read_bounded
    from otaguard.errors import UsageError
    from otaguard.server.client import FleetClient

    raw = read_bounded(ctx.obj["token_file"], MAX_TOKEN_FILE, "token file")
    token = raw.decode("ascii", "replace").strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{ctx.obj['token_file']} holds no token")
    with FleetClient(ctx.obj["server"], token) as client:
        yield client


def _print(value: Any, as_json: bool, table: Callable[[Any], Any] | None = None) -> None:
    if as_json or table is None:
        click.echo(json.dumps(value, indent=2, sort_keys=True))
        return
    from rich.console import Console

    Console(soft_wrap=True).print(table(value))


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    return table


# -- tokens -------------------------------------------------------------------------------


@fleet.group("token")
def token() -> None:
    """Operator tokens (admin only)."""


@token.command("create")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "release-manager", "operator", "auditor"]),
)
@click.option("--name", required=True, help="Who the token is for.")
@_json_option
@click.pass_context
def token_create(ctx: click.Context, role: str, name: str, as_json: bool) -> None:
    """Create a token; it is printed this once (store it in a file, mode 0600)."""
    with _client(ctx) as client:
        made = client.create_token(role, name)
    if as_json:
        _print(made, True)
    else:
        click.echo(made["token"])
        click.echo(f"token {made['id']} for {made['name']} ({made['role']})", err=True)


# -- enrolment ----------------------------------------------------------------------------


def _tags(items: Sequence[str]) -> dict[str, str]:
    from otaguard.errors import UsageError

    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item[:60]!r}: use KEY=VALUE")
        tags[key] = value
    return tags


@fleet.command("enroll")
@click.option(
    "--ca", "ca_file", required=True, type=click.Path(dir_okay=False), help="Device CA (PEM)."
)
@click.option("--hardware-id", required=True)
@click.option("--region", required=True)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--name", help="Group name (default: HARDWARE_ID-REGION).")
@_json_option
@click.pass_context
def enroll(
    ctx: click.Context,
    ca_file: str,
    hardware_id: str,
    region: str,
    tags: tuple[str, ...],
    name: str | None,
    as_json: bool,
) -> None:
    """Create an enrolment group: devices of that CA register on first contact."""
    from otaguard._files import read_bounded

    ca_pem = read_bounded(ca_file, 64 * 1024, "CA certificate").decode("ascii", "replace")
    with _client(ctx) as client:
        made = client.create_group(
            name=name or f"{hardware_id}-{region}",
            ca_pem=ca_pem,
            hardware_id=hardware_id,
            region=region,
            tags=_tags(tags),
        )
    _print(
        made,
        as_json,
        lambda g: _table(
            "enrolment group",
            ["name", "hardware id", "region", "tags", "CA"],
            [[g["name"], g["hardware_id"], g["region"], g["tags"], g["ca_subject"]]],
        ),
    )


# -- releases -----------------------------------------------------------------------------


@fleet.group("release")
def release() -> None:
    """Releases signed offline with ``otaguard repo``."""


@release.command("publish")
@click.option("--repo", "repo_dir", required=True, type=click.Path(file_okay=False, exists=True))
@_json_option
@click.pass_context
def release_publish(ctx: click.Context, repo_dir: str, as_json: bool) -> None:
    """Upload the repository's roots, signed roles and images; the server checks and publishes."""
    from otaguard.server.release_upload import collect, mark_published

    local = collect(Path(repo_dir))
    uploaded = []
    with _client(ctx) as client:
        for sha256, (path, length) in sorted(local.images.items()):
            if client.has_artifact(sha256) != length:
                client.upload_artifact(sha256, path)
                uploaded.append(sha256)
        result = client.upload_release([local.roots[v] for v in sorted(local.roots)], local.roles)
        mark_published(Path(repo_dir), local, client.repo_file)
    result["images_uploaded"] = len(uploaded)
    if as_json:
        _print(result, True)
        return
    roles = ", ".join(f"{r} v{v}" for r, v in sorted(result["roles"].items())) or "no role changed"
    click.echo(
        f"published ({roles}); root v{result['root_version']}, snapshot "
        f"v{result['snapshot_version']}, timestamp v{result['timestamp_version']}; "
        f"{len(uploaded)} image(s) uploaded"
    )
    for name in result["targets"]:
        click.echo(f"  new target {name}")


# -- deployments --------------------------------------------------------------------------


@fleet.command("deploy")
@click.argument("target")
@click.option("--device", "devices", multiple=True, help="Device id (repeatable).")
@click.option("--group", help="Every device of this enrolment group.")
@_json_option
@click.pass_context
def deploy(
    ctx: click.Context, target: str, devices: tuple[str, ...], group: str | None, as_json: bool
) -> None:
    """Assign TARGET to devices (the director's instruction)."""
    from otaguard.errors import UsageError

    if bool(devices) == bool(group):
        raise UsageError("give --device ID... or --group NAME (one of them)")
    with _client(ctx) as client:
        made = client.deploy(target, devices=devices, group=group)
    _print(
        made,
        as_json,
        lambda d: _table(
            f"deployment {d['id']}: {d['target']}",
            ["device", "ECU", "target"],
            [[a["device_id"], a["ecu"], a["target"]] for a in d["assignments"]]
            + [[s, "(skipped: no matching ECU)", ""] for s in d["skipped"]],
        ),
    )


# -- devices ------------------------------------------------------------------------------


@fleet.command("devices")
@_json_option
@click.pass_context
def devices_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every enrolled device."""
    with _client(ctx) as client:
        found = client.devices()
    _print(
        found,
        as_json,
        lambda items: _table(
            f"{len(items)} device(s)",
            ["device", "group", "region", "last seen", "revoked"],
            [
                [d["id"], d["group"], d["region"], _when(d["last_seen"]), _when(d["revoked_at"])]
                for d in items
            ],
        ),
    )


def _when(stamp: int | None) -> str:
    if not stamp:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@fleet.command("device", context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1, required=True, metavar="ID | revoke ID")
@_json_option
@click.pass_context
def device_cmd(ctx: click.Context, args: tuple[str, ...], as_json: bool) -> None:
    """Show a device (software per ECU, last check-in, history), or revoke it."""
    from otaguard.errors import UsageError

    if len(args) == 2 and args[0] == "revoke":
        with _client(ctx) as client:
            done = client.revoke_device(args[1])
        _print(done, as_json, lambda d: f"device {d['id']} revoked at {_when(d['revoked_at'])}")
        return
    if len(args) != 1:
        raise UsageError("use: fleet device ID, or fleet device revoke ID")
    with _client(ctx) as client:
        shown = client.device(args[0])
    _print(shown, as_json, _device_view)


def _device_view(d: dict[str, Any]) -> Any:
    from rich.console import Group

    head = _table(
        f"device {d['id']}",
        ["group", "region", "hardware id", "enrolled", "last seen", "revoked"],
        [[d["group"], d["region"], d["hardware_id"], _when(d["enrolled_at"]),
          _when(d["last_seen"]), _when(d["revoked_at"])]],
    )  # fmt: skip
    ecus = _table(
        "ECUs",
        ["ECU", "hardware id", "installed", "version", "slot", "boot", "assigned"],
        [[e["serial"], e["hardware_id"], e["target"], e["version"], e["slot"], e["boot"],
          e["assigned"]] for e in d["ecus"]],
    )  # fmt: skip
    history = _table(
        "history",
        ["time", "event", "ECU", "target", "result", "check", "detail"],
        [[h["time"], h["kind"], h["ecu"], h["target"], h["result"], h["check"], h["detail"]]
         for h in d["history"]],
    )  # fmt: skip
    return Group(head, ecus, history)


# -- the audit log (its own module) -------------------------------------------------------

from otaguard.cli.fleet_audit_cmd import audit as _audit  # noqa: E402

fleet.add_command(_audit)

from otaguard.cli.fleet_campaign_cmd import campaign as _campaign  # noqa: E402

fleet.add_command(_campaign)
