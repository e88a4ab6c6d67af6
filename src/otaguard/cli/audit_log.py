"""``--audit-log DIR``: the signing and PKI commands leave evidence in a local audit log.

An offline ceremony (release signing, PKI) has no server to record it; with these
options each command appends what it did to a local log (``otaguard audit init``
made it; docs/audit.md, "The local log"), later submitted to the fleet server's
log (``otaguard fleet audit submit``). A command takes them with one decorator,
:func:`audited`, naming the function that describes what it did from its options
and the outputs it wrote (so the record says what is on disk, not what was meant):

    --audit-log DIR            the local log            (or OTAGUARD_AUDIT_LOG)
    --audit-key KEY            its audit key, file or pkcs11: URI (or OTAGUARD_AUDIT_KEY)
    --audit-passphrase-env VAR the audit key's passphrase
    --audit-actor NAME         who acts (default: the login name; or OTAGUARD_AUDIT_ACTOR)
    --audit-role ROLE          their role, e.g. release-manager

Before the command runs, the audit key is loaded and the log checked with it
(signed checkpoint, stored hashes): a command never runs when its evidence could
not be recorded. After it succeeded, its events are appended (one signed
checkpoint). Should that append fail anyway (a full disk), the command's output
exists without its entry: the command exits 2 and says so.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
#: (action, subject, details): one event a command did
Note = tuple[str, str, dict[str, Any]]
Describe = Callable[[Mapping[str, Any]], list[Note]]
_OPTIONS = ("audit_log", "audit_key", "audit_passphrase_env", "audit_actor", "audit_role")


@dataclass
class _Log:
    directory: str
    signer: Any
    actor: Any
    notes: list[Note] = field(default_factory=list)


def _actor_name() -> str:
    for name in ("OTAGUARD_AUDIT_ACTOR", "USER", "LOGNAME"):
        value = os.environ.get(name)
        if value:
            return value
    return f"uid-{os.getuid()}"


def _open(options: Mapping[str, Any]) -> _Log | None:
    """Steps before the command: key loaded, log checked (or None without --audit-log)."""
    from otaguard.audit.entry import Actor
    from otaguard.audit.local import LocalLog
    from otaguard.cli.common import passphrase_from_env
    from otaguard.crypto.loader import load_signer
    from otaguard.errors import UsageError

    directory, key = options["audit_log"], options["audit_key"]
    if directory is None and key is None:
        return None
    if directory is None or key is None:
        raise UsageError("--audit-log and --audit-key go together")
    signer = load_signer(key, passphrase_from_env(options["audit_passphrase_env"]))
    LocalLog(directory).checked(signer)
    actor = Actor("user", options["audit_actor"] or _actor_name(), options["audit_role"])
    return _Log(directory, signer, actor)


def _append(log: _Log, notes: list[Note]) -> None:
    from otaguard.audit.entry import AuditEvent
    from otaguard.audit.local import LocalLog
    from otaguard.errors import StorageError

    now = dt.datetime.now(dt.UTC)
    events = [AuditEvent(now, log.actor, a, s, d) for a, s, d in notes]
    try:
        LocalLog(log.directory).append(events, log.signer)
    except Exception as exc:
        raise StorageError(
            f"the command's output was written but its audit entry could not be recorded in "
            f"{log.directory}: {exc}"
        ) from exc


def audited(describe: Describe) -> Callable[[F], F]:
    """Give a command the ``--audit-*`` options; ``describe(options)`` says what it did."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = {name: kwargs.pop(name) for name in _OPTIONS}
            log = _open(options)
            try:
                result = func(*args, **kwargs)
                if log is not None:
                    _append(log, describe(kwargs))
            finally:
                close = getattr(log.signer if log else None, "close", None)
                if close is not None:
                    close()
            return result

        for option in reversed(_CLICK_OPTIONS):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


_CLICK_OPTIONS = (
    click.option(
        "--audit-log",
        envvar="OTAGUARD_AUDIT_LOG",
        type=click.Path(file_okay=False),
        help="Record this command in a local audit log (otaguard audit init).",
    ),
    click.option(
        "--audit-key",
        envvar="OTAGUARD_AUDIT_KEY",
        help="The local audit log's key (file or pkcs11: URI).",
    ),
    click.option("--audit-passphrase-env", metavar="VAR", help="Passphrase of the audit key."),
    click.option("--audit-actor", help="Who acts (default: the login name).", metavar="NAME"),
    click.option("--audit-role", help="The actor's role, e.g. release-manager.", metavar="ROLE"),
)


# -- what each command did ------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key_ids(specs: Any, passphrase_env: str | None) -> list[str]:
    """The key ids of the signing keys a command used (loaded again: public halves only)."""
    from otaguard.cli.common import passphrase_from_env
    from otaguard.crypto.keys import key_id
    from otaguard.crypto.loader import load_signer

    found = []
    for spec in specs or ():
        signer = load_signer(spec, passphrase_from_env(passphrase_env))
        found.append(key_id(signer.public_key))
        close = getattr(signer, "close", None)
        if close is not None:
            close()
    return found


def _output(path: str) -> dict[str, Any]:
    if path == "-":
        return {"output": "-"}
    return {"output": path, "sha256": file_sha256(path)}


def image_signed(o: Mapping[str, Any]) -> list[Note]:
    """``sign`` (both formats): the image written, what it claims, who signed it."""
    details = {
        "format": o["fmt"],
        **_output(o["output_path"]),
        "version": o["version"],
        "security_counter": o["security_counter"],
        "hardware_ids": list(o["hardware_ids"]),
        "keys": _key_ids(o["keys"], o["passphrase_env"]),
    }
    return [("image.sign", o["output_path"], details)]


def key_generated(o: Mapping[str, Any]) -> list[Note]:
    from otaguard.crypto.keys import describe_key, key_id, load_public_key
    from otaguard.crypto.pkcs11 import Pkcs11Signer, is_pkcs11_uri, parse_pkcs11_uri

    out = o["out"]
    if o["public_out"]:
        public = load_public_key(Path(o["public_out"]).read_bytes())
    elif is_pkcs11_uri(out):
        with Pkcs11Signer(out) as signer:
            public = signer.public_key
    else:
        from otaguard.cli.common import passphrase_from_env
        from otaguard.crypto.loader import load_private_key_file

        public = load_private_key_file(out, passphrase_from_env(o["passphrase_env"])).public_key()
    where = parse_pkcs11_uri(out).without_pin() if is_pkcs11_uri(out) else out
    details = {"algorithm": describe_key(public), "key": where, "public_out": o["public_out"]}
    return [("key.generate", key_id(public), details)]


def _certificate(path: Path, kind: str, **extra: Any) -> Note:
    from cryptography.hazmat.primitives.serialization import Encoding

    from otaguard.crypto.keys import check_supported, key_id
    from otaguard.pki.store import read_certs

    cert = read_certs(path)[0]
    details = {
        "kind": kind,
        "serial": f"{cert.serial_number:X}",
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": key_id(check_supported(cert.public_key())),
        "sha256": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        **extra,
    }
    return ("cert.issue", cert.subject.rfc4514_string(), details)


def certificate_issued(kind: str) -> Describe:
    """``pki init-root`` and ``issue-*``: the certificate in ``--out-dir``."""

    def describe(o: Mapping[str, Any]) -> list[Note]:
        return [_certificate(Path(o["out_dir"]) / "cert.pem", kind, dir=o["out_dir"])]

    return describe


def cross_signed(o: Mapping[str, Any]) -> list[Note]:
    return [_certificate(Path(o["out"]), "cross-certificate", out=o["out"])]


def _ca_subject(ca_dir: str) -> str:
    from otaguard.pki.store import load_ca_dir

    return load_ca_dir(Path(ca_dir)).cert.subject.rfc4514_string()


def revoked(o: Mapping[str, Any]) -> list[Note]:
    from otaguard.pki.serial import parse_serial

    serial = f"{parse_serial(o['serial']):X}"
    details = {"ca": _ca_subject(o["ca_dir"]), "reason": o["reason"]}
    return [("cert.revoke", serial, details)]


def crl_issued(o: Mapping[str, Any]) -> list[Note]:
    from otaguard.pki.store import read_crl

    crl = read_crl(o["out"])
    details = {
        "out": o["out"],
        "sha256": file_sha256(o["out"]),
        "revoked": len(crl),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
    }
    return [("crl.issue", _ca_subject(o["ca_dir"]), details)]


def rotation_made(o: Mapping[str, Any]) -> list[Note]:
    from otaguard.pki.store import load_ca_dir

    new = load_ca_dir(Path(o["new_root"])).cert.subject.rfc4514_string()
    details = {"old_root": _ca_subject(o["ca_dir"]), "epoch": o["epoch"], **_output(o["out"])}
    return [("anchor.rotate", new, details)]


def _role_versions(directory: str, staged: bool) -> dict[str, Any]:
    from otaguard.repo.layout import Layout
    from otaguard.repo.repository import ImageRepository

    if not staged:
        repository = ImageRepository(directory)
        roles = ("root", "targets", "snapshot", "timestamp")
        return {role: repository.published_version(role) for role in roles}
    layout = Layout(Path(directory))
    found: dict[str, Any] = {}
    for role in sorted(layout.staged_roles())[:50]:
        md = layout.load(layout.staged_path(role), role)
        found[role] = {"version": md.signed.version, "signatures": sorted(md.signatures)[:20]}
    return found


def repo_signed(o: Mapping[str, Any]) -> list[Note]:
    details = {
        "keys": _key_ids(o["keys"], o["passphrase_env"]),
        "roles": list(o["roles"]),
        "staged": _role_versions(o["directory"], staged=True),
    }
    return [("repo.sign", o["directory"], details)]


def repo_published(o: Mapping[str, Any]) -> list[Note]:
    return [("repo.sign", o["directory"], {"published": _role_versions(o["directory"], False)})]


def delta_signed(o: Mapping[str, Any]) -> list[Note]:
    details = {
        "old_sha256": file_sha256(o["old_path"]),
        "new_sha256": file_sha256(o["new_path"]),
        **_output(o["out_path"]),
        "keys": _key_ids(o["keys"], o["passphrase_env"]),
    }
    return [("delta.sign", o["out_path"], details)]
