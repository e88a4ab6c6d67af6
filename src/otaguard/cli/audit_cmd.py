"""``otaguard audit``: verify an audit log offline, prove entries, keep a local log.

``verify`` and ``prove`` read a tiles layout from a directory or a URL (httpx,
through the repository fetcher: a length cap per resource derived from its path,
and a download deadline). Exit codes: 0 verified, 1 refused (the first bad entry
named), 2 usage or I/O error. ``init`` and ``append`` keep the file-backed log an
offline ceremony leaves behind (``otaguard.audit.local``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import TYPE_CHECKING, Any

import click

from otaguard.cli.common import passphrase_from_env

if TYPE_CHECKING:
    from otaguard.audit.note import VerifierKey
    from otaguard.audit.tiles import LogReader
    from otaguard.crypto.keys import PublicKey

_KEY_HELP = (
    "Trusted audit key: a public key file (PEM, as `otaguard key generate --public-out` "
    "writes it) or a signed-note verifier key NAME+ID+KEY. Repeatable."
)


def _reader(log: str, token_file: str | None = None) -> LogReader:
    from otaguard.audit.tiles import DirectoryReader
    from otaguard.errors import UsageError

    if log.startswith(("http://", "https://")):
        from otaguard.repo.fetcher import HttpxFetcher
        from otaguard.server.audit_client import HttpReader

        fetcher = HttpxFetcher()
        click.get_current_context().call_on_close(fetcher.close)
        return HttpReader(log, fetcher, read_token(token_file) if token_file else None)
    if token_file:
        raise UsageError("--token-file applies to a log URL only")
    if not os.path.isdir(log):
        raise UsageError(f"--log {log}: not a directory or an http(s) URL")
    return DirectoryReader(log)


def read_token(path: str) -> str:
    """An operator token from a file (``fleet --token-file`` reads it the same way)."""
    from otaguard._files import read_bounded
    from otaguard.errors import UsageError

    token = read_bounded(path, 4096, "token file").decode("ascii", "replace").strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{path} holds no token")
    return token


_TOKEN_OPTION = click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="A bearer token for a log URL that needs one (a fleet server's /api/v1/audit: "
    "an auditor's token).",
)


def _trusted_key(spec: str) -> PublicKey | VerifierKey:
    from otaguard.audit.note import load_trusted_key

    return load_trusted_key(spec)


def _read_file(path: str, what: str) -> bytes:
    from otaguard._files import read_bounded
    from otaguard.audit.tiles import MAX_CHECKPOINT_SIZE

    return read_bounded(path, MAX_CHECKPOINT_SIZE, what)


def _emit_failure(as_json: bool, exc: Exception) -> None:
    from otaguard.errors import AuditError

    if as_json and isinstance(exc, AuditError):
        body = {"ok": False, "check": exc.check, "index": exc.index, "error": str(exc)}
        click.echo(json.dumps(body, sort_keys=True))


@click.group()
def audit() -> None:
    """The audit trail: verify a log offline, prove entries, keep a local log."""


@audit.command("verify")
@click.option("--log", "log", required=True, help="Log directory or URL (tiles layout).")
@click.option(
    "--checkpoint",
    "old_checkpoint",
    type=click.Path(dir_okay=False),
    help="An older checkpoint you hold: the log must extend it.",
)
@click.option("--trusted-key", "trusted", multiple=True, required=True, help=_KEY_HELP)
@_TOKEN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    log: str,
    old_checkpoint: str | None,
    trusted: tuple[str, ...],
    token_file: str | None,
    as_json: bool,
) -> None:
    """Check every entry, the tree, the signature and consistency with an older checkpoint."""
    from otaguard.audit.note import b64encode
    from otaguard.audit.verify import verify_log

    keys = [_trusted_key(k) for k in trusted]
    old = _read_file(old_checkpoint, "checkpoint") if old_checkpoint else None
    try:
        result = verify_log(_reader(log, token_file), keys, old_checkpoint=old)
    except Exception as exc:
        _emit_failure(as_json, exc)
        raise
    cp = result.checkpoint
    if as_json:
        body: dict[str, Any] = {
            "ok": True,
            "origin": cp.origin,
            "tree_size": cp.size,
            "root_hash": b64encode(cp.root),
            "consistent_with": result.old_checkpoint.size if result.old_checkpoint else None,
        }
        click.echo(json.dumps(body, sort_keys=True))
        return
    click.echo(f"audit log {cp.origin}: {cp.size} entries verified, root {b64encode(cp.root)}")
    if result.old_checkpoint is not None:
        click.echo(f"extends the older checkpoint of {result.old_checkpoint.size} entries")


@audit.command("prove")
@click.option("--log", "log", required=True, help="Log directory or URL (tiles layout).")
@click.option("--index", type=click.IntRange(min=0), help="Prove that entry N is in the log.")
@click.option(
    "--old-size", type=click.IntRange(min=0), help="Prove the log extends its first M entries."
)
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    help="Check the checkpoint's signature first (recommended). " + _KEY_HELP,
)
@_TOKEN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the proof as JSON.")
def prove(
    log: str,
    index: int | None,
    old_size: int | None,
    trusted: tuple[str, ...],
    token_file: str | None,
    as_json: bool,
) -> None:
    """An inclusion proof (--index) or a consistency proof (--old-size), checked against
    the log's checkpoint before it is printed."""
    from otaguard.audit.checkpoint import parse_checkpoint
    from otaguard.audit.note import parse_note
    from otaguard.audit.proofs import prove_consistency, prove_inclusion
    from otaguard.audit.tiles import CHECKPOINT
    from otaguard.audit.verify import read_checkpoint
    from otaguard.errors import AuditCheckpointError, UsageError

    if (index is None) == (old_size is None):
        raise UsageError("give exactly one of --index and --old-size")
    read = _reader(log, token_file)
    if trusted:
        checkpoint = read_checkpoint(read, [_trusted_key(k) for k in trusted])
    else:
        try:
            checkpoint = parse_checkpoint(parse_note(read(CHECKPOINT)).text)
        except FileNotFoundError:
            raise AuditCheckpointError("the log has no checkpoint") from None
    body: dict[str, Any]
    if index is not None:
        body = prove_inclusion(read, checkpoint, index).to_json()
    else:
        assert old_size is not None
        body = prove_consistency(read, checkpoint, old_size).to_json()
    body["origin"] = checkpoint.origin
    body["checkpoint_verified"] = bool(trusted)
    if as_json:
        click.echo(json.dumps(body, sort_keys=True))
        return
    for name in sorted(body):
        value = body[name]
        if isinstance(value, list):
            click.echo(f"{name}:")
            for item in value:
                click.echo(f"  {item}")
        else:
            click.echo(f"{name}: {value}")
    if not trusted:
        click.echo("note: the checkpoint's signature was not checked (no --trusted-key)")


@audit.command("vkey")
@click.argument("key_spec", metavar="KEY")
@click.option("--name", required=True, help="The key name: the log's origin, e.g. example.com/log.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted private key.")
def vkey(key_spec: str, name: str, passphrase_env: str | None) -> None:
    """Print the signed-note verifier key (NAME+ID+KEY) of KEY (public, private or pkcs11:)."""
    from otaguard.audit.note import VerifierKey

    click.echo(VerifierKey.for_public_key(name, _public_key(key_spec, passphrase_env)).encode())


def _public_key(spec: str, passphrase_env: str | None) -> PublicKey:
    from otaguard.crypto.loader import public_key_of

    return public_key_of(spec, passphrase_from_env(passphrase_env))


@audit.command("init")
@click.option("--log", "log", required=True, type=click.Path(file_okay=False))
@click.option("--origin", required=True, help="The log's name, e.g. ceremony.example.com/2026-12.")
@click.option("--key", "key_spec", required=True, help="Audit key: key file or pkcs11: URI.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted key.")
def init(log: str, origin: str, key_spec: str, passphrase_env: str | None) -> None:
    """Start an empty local audit log signed by KEY (Ed25519 or ECDSA P-256)."""
    from otaguard.audit.local import LocalLog
    from otaguard.audit.note import VerifierKey
    from otaguard.crypto.loader import load_signer

    signer = load_signer(key_spec, passphrase_from_env(passphrase_env))
    LocalLog(log).create(origin, signer)
    click.echo(f"audit log {origin} created in {log}")
    click.echo(f"verifier key: {VerifierKey.for_public_key(origin, signer.public_key).encode()}")


@audit.command("append")
@click.option("--log", "log", required=True, type=click.Path(file_okay=False))
@click.option("--key", "key_spec", required=True, help="The log's audit key.")
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of an encrypted key.")
@click.option("--action", required=True, help="What happened, e.g. image.sign.")
@click.option("--subject", required=True, help="What it happened to (file, certificate...).")
@click.option("--actor", "actor_id", required=True, help="Who did it.")
@click.option(
    "--actor-kind",
    default="user",
    show_default=True,
    type=click.Choice(["operator", "device", "key", "user", "system"]),
)
@click.option("--role", help="The actor's role.")
@click.option("--details", default="{}", help="A JSON object (integers, no floats).")
@click.option("--time", "when", help="RFC 3339 UTC time of the event (default: now).")
def append(
    log: str,
    key_spec: str,
    passphrase_env: str | None,
    action: str,
    subject: str,
    actor_id: str,
    actor_kind: str,
    role: str | None,
    details: str,
    when: str | None,
) -> None:
    """Record one event in a local audit log and sign its new checkpoint."""
    from otaguard.audit.entry import Actor, AuditEvent, encode_entry
    from otaguard.audit.local import append_event
    from otaguard.crypto.loader import load_signer
    from otaguard.errors import AuditEntryError, UsageError

    try:
        parsed = json.loads(details)
    except ValueError as exc:
        raise UsageError(f"--details is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UsageError("--details must be a JSON object")
    try:
        moment = (
            dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
            if when
            else dt.datetime.now(dt.UTC)
        )
    except ValueError:
        raise UsageError(f"--time {when}: not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise UsageError("--time must carry its time zone (e.g. 2026-12-03T10:00:00Z)")
    event = AuditEvent(moment, Actor(actor_kind, actor_id, role), action, subject, parsed)
    try:
        encode_entry(0, event)  # the event's own faults are the operator's, not the log's
    except AuditEntryError as exc:
        raise UsageError(f"cannot record this event: {exc}") from None
    signer = load_signer(key_spec, passphrase_from_env(passphrase_env))
    index = append_event(log, event, signer)
    click.echo(f"entry {index} appended to {log}")
