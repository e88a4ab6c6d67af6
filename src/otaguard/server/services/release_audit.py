"""What the audit log records of a release upload: what was published and who signed it,
or why it was refused.

* ``release.upload``, one per new target (subject: the target's name): its hashes,
  length, hardware ids (the compatibility rule the devices enforce), version and
  security counter, and the role that lists it: version, the keys whose signatures
  verified, the threshold;
* ``repo.sign``, one per publish (subject ``repository``): the root and roles
  published, the snapshot and timestamp the server's online keys signed;
* ``release.refuse`` (subject ``repository``): the check that refused the upload, its
  one-line reason, and what was uploaded (each document's SHA-256, the targets named).

Details are capped so an entry always fits the log (64 KiB) whatever the signed
metadata holds (its custom fields are the release managers', of any length): long
lists are cut and counted, strings cut at :data:`MAX_TEXT`. An entry that did not
fit would fail the publish after its files were written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from otaguard.audit.entry import Actor, AuditEvent
from otaguard.server.services import audit

MAX_LISTED = 50
MAX_KEYS = 20
MAX_ROLES = 10
MAX_DETAIL = 500
MAX_TEXT = 128


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT]


def _capped(items: Sequence[Any], limit: int = MAX_LISTED) -> dict[str, Any]:
    return {"items": list(items[:limit]), "count": len(items)}


def _delegator(name: str, tree: Mapping[str, Metadata[Targets]]) -> Targets | None:
    for md in tree.values():
        delegations = md.signed.delegations
        if delegations is None:
            continue
        if delegations.roles and name in delegations.roles:
            return md.signed
        if delegations.succinct_roles is not None and delegations.succinct_roles.is_delegated_role(
            name
        ):
            return md.signed
    return None


def signers(
    name: str, md: Metadata[Targets], tree: Mapping[str, Metadata[Targets]], root: Root
) -> dict[str, Any]:
    """The keys whose signatures on role ``name`` verified, and its threshold."""
    by: Root | Targets | None = root if name == Targets.type else _delegator(name, tree)
    if by is None:
        return {"keys": sorted(md.signatures)[:MAX_KEYS], "threshold": None}
    result = by.get_verification_result(name, md.signed_bytes, md.signatures)
    return {"keys": sorted(result.signed)[:MAX_KEYS], "threshold": result.threshold}


def _target_details(info: TargetFile, role: str, md: Metadata[Targets]) -> dict[str, Any]:
    custom = info.custom
    hardware = custom.get("hardware_ids")
    hardware_ids = [_text(h) for h in hardware[:MAX_LISTED]] if isinstance(hardware, list) else []
    replaces = custom.get("compatible_with")  # the release's declared software configuration
    return {
        "target": info.path,
        "sha256": info.hashes.get("sha256"),
        "length": info.length,
        "hardware_ids": hardware_ids,
        "compatible_with": (
            [_text(v) for v in replaces[:MAX_LISTED]] if isinstance(replaces, list) else None
        ),
        "version": _text(custom["version"]) if "version" in custom else None,
        "security_counter": _int_or_none(custom.get("security_counter")),
        "role": _text(role),
        "role_version": md.signed.version,
    }


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def published(
    *,
    who: Actor,
    operator_details: Mapping[str, Any],
    now: float,
    root: Root,
    new_roots: Sequence[int],
    changed: Mapping[str, Metadata[Targets]],
    tree: Mapping[str, Metadata[Targets]],
    new_targets: Sequence[TargetFile],
    snapshot_version: int,
    timestamp_version: int,
    online_keys: Mapping[str, str],
) -> list[AuditEvent]:
    """The entries of an accepted upload (see the module docstring)."""
    time = audit.when(now)
    role_of = {path: name for name, md in changed.items() for path in md.signed.targets}
    role_signers = {name: signers(name, md, tree, root) for name, md in changed.items()}
    events = []
    for info in new_targets:
        role = role_of.get(info.path, Targets.type)
        details = {
            **operator_details,
            **_target_details(info, role, changed[role]),
            "signed_by": role_signers[role],
            "root_version": root.version,
        }
        events.append(AuditEvent(time, who, "release.upload", info.path, details))
    roles = sorted(changed.items())
    summary = {
        **operator_details,
        "roots": list(new_roots),
        "roles": _capped(
            [
                {"role": _text(n), "version": md.signed.version, **role_signers[n]}
                for n, md in roles
            ],
            MAX_ROLES,
        ),
        "targets": _capped(sorted(t.path for t in new_targets)),
        "root_version": root.version,
        "snapshot_version": snapshot_version,
        "timestamp_version": timestamp_version,
        "online_keys": dict(online_keys),
    }
    events.append(AuditEvent(time, who, "repo.sign", "repository", summary))
    return events


def refused(
    *,
    check: str,
    detail: str,
    roots: Sequence[bytes],
    roles: Mapping[str, bytes],
) -> dict[str, Any]:
    """The details of a refused upload: why, and which bytes (they are not kept)."""
    targets: list[str] = []
    data = roles.get(Targets.type)
    if data is not None:
        try:  # best effort: the upload may be refused precisely for not parsing
            md: Metadata[Targets] = Metadata.from_bytes(data)
            targets = sorted(_text(p) for p in md.signed.targets)
        except Exception:
            targets = []
    return {
        "check": check,
        "detail": " ".join(detail.split())[:MAX_DETAIL],
        "roots": _capped([hashlib.sha256(r).hexdigest() for r in roots]),
        "roles": _capped(
            [
                {"role": _text(n), "sha256": hashlib.sha256(d).hexdigest()}
                for n, d in sorted(roles.items())
            ]
        ),
        "targets": _capped(targets),
    }
