"""``otaguard fleet audit``: the server's audit log, checked on the auditor's side.

* ``export --out DIR``: a fresh checkpoint, then the log as the server stores it, in
  the C2SP tlog-tiles layout (``checkpoint``, ``tile/...``, ``tile/entries/...``):
  ``otaguard audit verify --log DIR --trusted-key audit.pub`` checks it offline, and
  any web server can serve it;
* ``prove``: an inclusion or consistency proof from the server, checked here;
* ``vehicle ID``: a vehicle's software history (per ECU: image, version, security
  counter over time, with the deployment or campaign and approvals behind each
  change, and the software id), JSON or CSV, each record with its inclusion proof;
* ``release TARGET``: an update's record (signatures, compatibility rule, decisions,
  refusals, outcome counts);
* ``submit --log DIR``: a local (ceremony) log's entries, verified here against its
  own checkpoint and key, recorded in the server's log.

Every record printed was checked against a checkpoint verified with
``--trusted-key`` (the server's ``DATA_DIR/audit.pub``): a server that edits an
entry is refused (exit 1), the entry named.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from otaguard.cli import params

if TYPE_CHECKING:
    from otaguard.audit.note import VerifierKey
    from otaguard.crypto.keys import PublicKey
    from otaguard.server.audit_client import AuditClient

_TRUSTED = click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    required=True,
    help="The server's audit key (DATA_DIR/audit.pub, or a verifier key NAME+ID+KEY).",
)


def _keys(specs: tuple[str, ...]) -> list[PublicKey | VerifierKey]:
    from otaguard.audit.note import load_trusted_key

    return [load_trusted_key(k) for k in specs]


def _emit(value: Any, as_json: bool, line: str) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True) if as_json else line)


@contextlib.contextmanager
def _session(ctx: click.Context) -> Iterator[AuditClient]:
    """The fleet client of the ``fleet`` group (server, token), as an audit client."""
    from otaguard.cli.fleet_cmd import _client
    from otaguard.server.audit_client import AuditClient

    with _client(ctx) as client:
        yield AuditClient(client)


@click.group("audit")
def audit() -> None:
    """The server's audit log: export, proofs, vehicle and release records, submissions."""


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    help="Check the checkpoint's signature before writing (the server's audit.pub).",
)
@params.JSON
@click.pass_context
def export(ctx: click.Context, out: str, trusted: tuple[str, ...], as_json: bool) -> None:
    """Write the whole log as static tlog-tiles files (a new checkpoint first)."""
    from otaguard.server.audit_client import export_log

    with _session(ctx) as api:
        report = export_log(api, out, _keys(trusted) if trusted else ())
    line = (
        f"exported {report['tree_size']} entries of {report['origin']} to {out} "
        f"({report['files']} files); "
        f"verify: otaguard audit verify --log {out} --trusted-key audit.pub"
    )
    _emit(report, as_json, line)


@audit.command("prove")
@click.option("--index", type=click.IntRange(min=0), help="Prove entry N is in the log.")
@click.option("--old-size", type=click.IntRange(min=0), help="Prove the log extends its first M.")
@click.option(
    "--checkpoint",
    "old_checkpoint",
    type=click.Path(dir_okay=False),
    help="An older checkpoint you hold: prove the log extends exactly it.",
)
@_TRUSTED
@params.JSON
@click.pass_context
def prove(
    ctx: click.Context,
    index: int | None,
    old_size: int | None,
    old_checkpoint: str | None,
    trusted: tuple[str, ...],
    as_json: bool,
) -> None:
    """An inclusion (--index) or consistency (--old-size, --checkpoint) proof from the
    server, checked here against a fresh checkpoint signed by the audit key."""
    from otaguard.audit.checkpoint import open_checkpoint
    from otaguard.audit.note import b64encode
    from otaguard.cli.audit_cmd import _read_file
    from otaguard.errors import UsageError
    from otaguard.server.audit_client import fresh_head, proven_consistency, proven_inclusion

    if sum(x is not None for x in (index, old_size, old_checkpoint)) != 1:
        raise UsageError("give exactly one of --index, --old-size and --checkpoint")
    keys = _keys(trusted)
    old = (
        open_checkpoint(_read_file(old_checkpoint, "checkpoint"), keys) if old_checkpoint else None
    )
    with _session(ctx) as api:
        head = fresh_head(api, keys)
        if index is not None:
            body = proven_inclusion(api, head, index)
        else:
            wanted = old.size if old is not None else old_size
            assert wanted is not None
            body = proven_consistency(api, head, wanted, old)
    size, root = head.checkpoint.size, head.checkpoint.root
    if as_json:
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    what = (
        f"entry {index} is in the log of {size} entries"
        if index is not None
        else f"the log of {size} entries extends its first {body['tree_size_1']}"
    )
    click.echo(f"verified: {what} ({head.checkpoint.origin}, root {b64encode(root)})")
    if index is not None:
        click.echo(body["entry"])


@audit.command("vehicle")
@click.argument("device_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="json and csv carry each record's entry and inclusion proof.",
)
@_TRUSTED
@params.JSON
@click.pass_context
def vehicle(
    ctx: click.Context, device_id: str, fmt: str, trusted: tuple[str, ...], as_json: bool
) -> None:
    """A vehicle's software history and identification, every record proven."""
    from otaguard.audit.records import VEHICLE_ACTIONS, vehicle_csv, vehicle_history
    from otaguard.server.audit_client import checkpoint_json, collect, fresh_head

    keys = _keys(trusted)
    with _session(ctx) as api:
        head = fresh_head(api, keys)
        items = collect(api, head, subject=device_id, actions=VEHICLE_ACTIONS)
    history = {"checkpoint": checkpoint_json(head), **vehicle_history(device_id, items)}
    if as_json or fmt == "json":
        click.echo(json.dumps(history, indent=2, sort_keys=True))
    elif fmt == "csv":
        click.echo(vehicle_csv(history, history["checkpoint"]), nl=False)
    else:
        _vehicle_table(history)


def _vehicle_table(history: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vehicle {history['vehicle']}: software id {history['software_id']}")
    for column in (
        "entry",
        "time",
        "ECU",
        "target",
        "version",
        "counter",
        "decided by",
        "deployment",
    ):
        table.add_column(column)
    for record in history["software"]:
        for change in record["changes"]:
            table.add_row(
                str(record["index"]),
                record["time"],
                str(change["serial"]),
                str(change["target"] or ""),
                str(change["version"] or ""),
                str(change["security_counter"]),
                str(change["decided_by"] or ""),
                str(change["deployment"] or ""),
            )
    console = Console(soft_wrap=True)
    console.print(table)
    cp = history["checkpoint"]
    console.print(
        f"{len(history['software'])} state record(s), {len(history['events'])} other event(s); "
        f"each proven in the log of {cp['tree_size']} entries ({cp['origin']})"
    )


@audit.command("release")
@click.argument("target")
@_TRUSTED
@params.JSON
@click.pass_context
def release(ctx: click.Context, target: str, trusted: tuple[str, ...], as_json: bool) -> None:
    """An update's record: signatures, compatibility, decisions, refusals, outcomes."""
    from otaguard.audit.records import campaign_line, release_story
    from otaguard.server.audit_client import checkpoint_json, collect, fresh_head

    keys = _keys(trusted)
    with _session(ctx) as api:
        head = fresh_head(api, keys)
        found = {p.entry.index: p for p in collect(api, head, target=target)}
        for action in ("release.refuse", "audit.submit"):
            found.update({p.entry.index: p for p in collect(api, head, actions=[action])})
    story = {"checkpoint": checkpoint_json(head), **release_story(target, list(found.values()))}
    if as_json:
        click.echo(json.dumps(story, indent=2, sort_keys=True))
        return
    click.echo(f"release {target} (proven in the log of {head.checkpoint.size} entries)")
    for upload in story["uploads"]:
        d = upload["details"]
        signed = d.get("signed_by") or {}
        click.echo(
            f"  uploaded (entry {upload['index']}, {upload['time']}) by {upload['actor']}: "
            f"sha256 {d.get('sha256')}, version {d.get('version')}, counter "
            f"{d.get('security_counter')}, {d.get('role')} v{d.get('role_version')} signed by "
            f"{len(signed.get('keys') or [])} key(s) (threshold {signed.get('threshold')})"
        )
    compatibility = story["compatibility"]
    replaces = compatibility.get("compatible_with")
    click.echo(
        f"  compatibility: hardware ids {compatibility['hardware_ids']}"
        + (f", replaces {', '.join(replaces)}" if replaces else ", replaces: not declared")
    )
    click.echo(f"  offline signing entries: {len(story['offline_signatures'])}")
    click.echo(f"  refused uploads: {len(story['refusals'])}")
    for deployment in story["deployments"]:
        d = deployment["details"]
        click.echo(
            f"  deployment {d.get('deployment')} (entry {deployment['index']}) by "
            f"{deployment['actor']}: {d.get('assignments')} ECU(s) of {d.get('devices')} device(s)"
        )
    click.echo(f"  campaign entries: {len(story['campaign'])}, halts: {len(story['halts'])}")
    for entry in story["campaign"]:
        click.echo(f"    {campaign_line(entry)}")
    click.echo(f"  outcomes (devices): {json.dumps(story['outcome_devices'], sort_keys=True)}")
    click.echo(f"  outcomes (events): {json.dumps(story['outcomes'], sort_keys=True)}")


@audit.command("submit")
@click.option("--log", "log", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--key",
    "key_spec",
    required=True,
    help="The local log's audit key: public key file, verifier key, private key or pkcs11: URI.",
)
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted private key.")
@params.JSON
@click.pass_context
def submit(
    ctx: click.Context, log: str, key_spec: str, passphrase_env: str | None, as_json: bool
) -> None:
    """Send a local (ceremony) log's entries to the server's log, verified first here."""
    from otaguard.audit.local import read_for_submission
    from otaguard.cli.audit_cmd import _public_key, _trusted_key
    from otaguard.crypto.loader import read_key_file
    from otaguard.crypto.pkcs11 import is_pkcs11_uri

    private = is_pkcs11_uri(key_spec) or (
        os.path.isfile(key_spec) and b"PRIVATE KEY" in read_key_file(key_spec)
    )
    key = _public_key(key_spec, passphrase_env) if private else _trusted_key(key_spec)
    local = read_for_submission(log, key)
    with _session(ctx) as api:
        done = api.submit(local.note, local.key.encode(), local.entries)
    line = (
        f"{done['recorded']} new entries of {done['origin']} recorded (from index "
        f"{done['first_index']}); {done['already']} were recorded before"
    )
    _emit(done, as_json, line)
