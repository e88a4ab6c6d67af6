"""Records an auditor asks for, built from verified log entries: a vehicle's software
history and an update's story. Pure: entries in, records out (the caller checked each
entry's inclusion proof against a checkpoint it verified).

**Software identification (R156's RXSWIN, "RX Software Identification Number").**
UN Regulation No. 156 asks the manufacturer to identify the software of a vehicle
type that is relevant to its type approval, and to be able to read it from the
vehicle. otaguard's equivalent is a stable identifier of one vehicle's software
configuration: :func:`software_id` hashes, for every ECU of the set, its serial, its
hardware id and the SHA-256 of the image it runs (canonical JSON, sorted by
serial). Two vehicles with the same ECUs running the same images have the same id;
any change of an image changes it. It is an identifier of a configuration, not the
manufacturer's type-approval RXSWIN (which is a number the manufacturer assigns to a
set of such configurations): the mapping from ids to RXSWINs is the manufacturer's.

Which entries make a vehicle's history (subject = the device id): ``device.enroll``,
``device.assign`` (a deployment, campaign or operator decided its next software),
``device.state`` (the software it reports running, per ECU), ``device.install``,
``device.boot``, ``device.revert``, ``device.refuse`` (its own results) and
``device.revoke``. An update's (subject or ``target`` = the target name):
``release.upload``, ``deployment.create``, ``device.assign``, the devices' results,
and the ``campaign.*`` and ``killswitch.decision`` entries that name it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otaguard.audit.entry import AuditEntry, format_time, parse_entry
from otaguard.errors import AuditEntryError

#: The prefix of :func:`software_id` values (a format version).
SOFTWARE_ID_PREFIX = "swid1-"
ECU_FIELDS = ("serial", "hardware_id", "target", "version", "security_counter", "sha256")
VEHICLE_ACTIONS = (
    "device.enroll",
    "device.assign",
    "device.state",
    "device.install",
    "device.boot",
    "device.revert",
    "device.refuse",
    "device.revoke",
)
HALTS = ("campaign.pause", "campaign.halt", "campaign.kill")
#: device event actions -> the outcome they count as in an update's record
OUTCOMES = {
    "device.install": "install",
    "device.boot": "boot",
    "device.revert": "revert",
    "device.refuse": "refuse",
}


def software_id(ecus: Iterable[Mapping[str, Any]]) -> str:
    """The identifier of a software configuration: ECU serial, hardware id and image
    SHA-256 of every ECU, canonical and sorted (see the module docstring)."""
    items = sorted([str(e.get("serial")), str(e.get("hardware_id")), e.get("sha256")] for e in ecus)
    text = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return SOFTWARE_ID_PREFIX + hashlib.sha256(text).hexdigest()[:32]


@dataclass(frozen=True)
class Proven:
    """An entry as read from the log, with the inclusion path it was checked with."""

    entry: AuditEntry
    raw: bytes
    proof: Sequence[str]  # base64 hashes, bottom-up


def _ecu(value: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value.get(name) for name in ECU_FIELDS}


def _common(item: Proven) -> dict[str, Any]:
    event = item.entry.event
    actor = event.actor
    return {
        "index": item.entry.index,
        "time": format_time(event.time),
        "action": event.action,
        "actor": f"{actor.kind}:{actor.id}" + (f" ({actor.role})" if actor.role else ""),
        "entry": item.raw.decode("utf-8"),
        "inclusion_path": list(item.proof),
    }


def vehicle_history(device_id: str, items: Sequence[Proven]) -> dict[str, Any]:
    """The vehicle's software over time (the ``device.state`` entries), each change with
    the assignment behind it (deployment, who decided, approvals), and every other event."""
    assigned: dict[str, dict[str, Any]] = {}  # ECU serial -> the latest device.assign
    software: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any]] = {}
    for item in sorted(items, key=lambda p: p.entry.index):
        event = item.entry.event
        if event.subject != device_id:
            raise ValueError(f"entry {item.entry.index} is about {event.subject!r}")
        details = dict(event.details)
        if event.action == "device.assign":
            for ecu in details.get("ecus") or []:
                assigned[str(ecu)] = {**_common(item), **details}
        if event.action != "device.state":
            events.append({**_common(item), "details": details})
            continue
        ecus = [_ecu(e) for e in details.get("ecus") or [] if isinstance(e, Mapping)]
        changes = []
        for ecu in ecus:
            serial = str(ecu["serial"])
            if previous.get(serial) == ecu:
                continue
            behind = assigned.get(serial)
            reached = behind is not None and behind.get("target") == ecu["target"]
            changes.append(
                {
                    **ecu,
                    "previous": previous.get(serial),
                    "deployment": behind.get("deployment") if reached and behind else None,
                    "campaign": behind.get("campaign") if reached and behind else None,
                    "decided_by": behind["actor"] if reached and behind else None,
                    "decided_at": behind["index"] if reached and behind else None,
                    "approvals": list(behind.get("approvals") or []) if reached and behind else [],
                }
            )
            previous[serial] = ecu
        computed = software_id(ecus)
        software.append(
            {
                **_common(item),
                "software_id": computed,
                "software_id_recorded": details.get("software_id"),
                "ecus": ecus,
                "changes": changes,
            }
        )
    current = software[-1] if software else None
    return {
        "vehicle": device_id,
        "software_id": current["software_id"] if current else None,
        "ecus": current["ecus"] if current else [],
        "software": software,
        "events": events,
    }


CSV_COLUMNS = (
    "index",
    "time",
    "action",
    "actor",
    "ecu",
    "hardware_id",
    "target",
    "version",
    "security_counter",
    "sha256",
    "software_id",
    "deployment",
    "campaign",
    "decided_by",
    "approvals",
    "result",
    "entry",
    "inclusion_path",
)


def vehicle_csv(history: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> str:
    """One row per ECU change and per other event; each with its entry and proof
    (the checkpoint's size and root in a comment line first)."""
    out = io.StringIO()
    out.write(
        f"# vehicle {history['vehicle']}; proofs against checkpoint of "
        f"{checkpoint['tree_size']} entries, root {checkpoint['root_hash']} "
        f"({checkpoint['origin']})\n"
    )
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows: list[tuple[int, dict[str, Any]]] = []
    for record in history["software"]:
        for change in record["changes"]:
            row = {
                **_row_common(record),
                **{name: change[name] for name in ECU_FIELDS if name != "serial"},
                "ecu": change["serial"],
                "software_id": record["software_id"],
                "deployment": change["deployment"],
                "campaign": change["campaign"],
                "decided_by": change["decided_by"],
                "approvals": ";".join(str(a) for a in change["approvals"]),
            }
            rows.append((record["index"], row))
    for event in history["events"]:
        details = event["details"]
        ecus = details.get("ecus") or []
        row = {
            **_row_common(event),
            "ecu": details.get("ecu") or ";".join(str(e) for e in ecus if isinstance(e, str)),
            "target": details.get("target"),
            "deployment": details.get("deployment"),
            "campaign": details.get("campaign"),
            "result": details.get("result") or details.get("kind") or details.get("reason"),
        }
        rows.append((event["index"], row))
    for _, row in sorted(rows, key=lambda r: r[0]):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _row_common(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": record["index"],
        "time": record["time"],
        "action": record["action"],
        "actor": record["actor"],
        "entry": record["entry"],
        "inclusion_path": ";".join(record["inclusion_path"]),
    }


def _inner(details: Mapping[str, Any]) -> AuditEntry | None:
    """The ceremony's own entry an ``audit.submit`` entry carries (None if unreadable)."""
    raw = details.get("entry")
    if not isinstance(raw, str):
        return None
    try:
        return parse_entry(raw.encode("utf-8"))
    except AuditEntryError:
        return None


def release_story(target: str, items: Sequence[Proven]) -> dict[str, Any]:
    """An update's record: uploads (signatures, compatibility rule), the offline
    ceremony's signing entries for the same image bytes, refusals, decisions
    (deployments, campaigns, approvals, waves, halts, kill-switch decisions) and the
    devices' outcomes counted per kind and result: as events (a device that booted twice
    counts twice) and as devices (``outcome_devices``: each device once per result)."""
    ordered = sorted(items, key=lambda p: p.entry.index)
    uploads = [
        {**_common(p), "details": dict(p.entry.event.details)}
        for p in ordered
        if p.entry.event.action == "release.upload"
        and p.entry.event.details.get("target") == target
    ]
    digests = {u["details"].get("sha256") for u in uploads} - {None}
    refusals, deployments, campaign, signing = [], [], [], []
    outcomes: dict[str, dict[str, int]] = {}
    devices: dict[str, dict[str, set[str]]] = {}
    assigned: set[str] = set()
    for item in ordered:
        event = item.entry.event
        details = dict(event.details)
        record = {**_common(item), "details": details}
        action = event.action
        if action == "release.refuse":
            if target in ((details.get("targets") or {}).get("items") or []):
                refusals.append(record)
        elif action == "deployment.create" and details.get("target") == target:
            deployments.append(record)
        elif action == "device.assign" and details.get("target") == target:
            assigned.add(event.subject)
        elif action.startswith("campaign.") or action == "killswitch.decision":
            if details.get("target") == target:
                campaign.append(record)
        elif action == "audit.submit":
            inner = _inner(details)
            if inner is not None and inner.event.details.get("sha256") in digests:
                signing.append({**record, "ceremony_action": inner.event.action})
        elif action in OUTCOMES and details.get("target") == target:
            kind = OUTCOMES[action]
            result = str(details.get("result") or "ok")
            counts = outcomes.setdefault(kind, {})
            counts[result] = counts.get(result, 0) + 1
            devices.setdefault(kind, {}).setdefault(result, set()).add(event.subject)
    last = uploads[-1]["details"] if uploads else {}
    return {
        "target": target,
        "uploads": uploads,
        "signed_by": [u["details"].get("signed_by") for u in uploads],
        "offline_signatures": signing,
        "compatibility": {
            "hardware_ids": last.get("hardware_ids"),
            "compatible_with": last.get("compatible_with"),
        },
        "refusals": refusals,
        "deployments": deployments,
        "devices_assigned": len(assigned),
        "campaign": campaign,
        "approvals": [c for c in campaign if c["action"] == "campaign.approve"],
        "halts": [c for c in campaign if c["action"] in HALTS],
        "outcomes": outcomes,
        "outcome_devices": {
            kind: {result: len(ids) for result, ids in by.items()} for kind, by in devices.items()
        },
    }


def campaign_line(record: Mapping[str, Any]) -> str:
    """One line for a campaign entry of :func:`release_story`: what happened, who, and why.

    The why is what an auditor asks first: the compatibility rule and waves a campaign was
    created with, the reason a kill switch or an operator gave for a halt.
    """
    details = record.get("details") or {}
    line = f"{record['action']} (entry {record['index']}, {record['time']}) by {record['actor']}"
    if record["action"] == "campaign.create":
        line += f": compatible {details.get('compatible')}, waves {details.get('waves')}"
    elif details.get("reason"):
        line += f": {details['reason']}"
    return line
