"""The audit record: one event as canonical JSON, the bytes a log leaf is made of.

Why canonical JSON and these fields:

* The leaf hash is over the exact bytes, so every writer must produce the same
  bytes for the same event: keys sorted, no whitespace, UTF-8, integers only (a
  float has several spellings across languages), no duplicate keys. Parsing is
  strict: input that is not already in canonical form is refused, so one event
  never has two leaves.
* ``index`` is the entry's own position in the log. The Merkle tree proves
  *that* bytes were at a position; the index lets a verifier say directly that
  an entry was moved, inserted or deleted ("position 7 holds entry 8").
* ``time`` is given by the caller (the I/O shell reads the clock; nothing here
  does). RFC 3339, UTC, ``Z``, microseconds only when not zero.
* ``action`` comes from one list, :data:`ACTIONS`, so a report can be grouped by
  action and a typo is an error, not a new kind of event. Adding an action is a
  format change: a verifier refuses actions it does not know.
* An entry must fit the 16-bit length prefix of a tile bundle (C2SP tlog-tiles).

Wire form (keys in this order because they are sorted)::

    {"action":"image.sign","actor":{"id":"alice","kind":"user"},"details":{...},
     "index":7,"subject":"fw-1.4.0.img","time":"2026-12-03T10:00:00Z","v":1}
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otaguard.errors import AuditEntryError

FORMAT_VERSION = 1
#: C2SP tlog-tiles: entries in a bundle have a big-endian uint16 length prefix.
MAX_ENTRY_SIZE = 0xFFFF
MAX_TEXT = 1024
MAX_DETAILS_DEPTH = 8
MAX_INDEX = (1 << 63) - 1

#: Every action an entry may record (dotted names, grouped by subsystem).
ACTIONS = frozenset(
    {
        "key.generate",
        "key.use",
        "image.sign",
        "delta.sign",
        "cert.issue",
        "cert.revoke",
        "crl.issue",
        "anchor.rotate",
        "release.upload",
        "release.refuse",
        "repo.sign",
        "device.enroll",
        "token.create",
        "token.revoke",
        "api.change",
        "campaign.create",
        "campaign.approve",
        "campaign.start",
        "campaign.pause",
        "campaign.resume",
        "campaign.halt",
        "campaign.kill",
        "campaign.cancel",
        "campaign.complete",
        "killswitch.decision",
        "device.install",
        "device.boot",
        "device.revert",
        # the fleet server (docs/server.md, "Audit log")
        "artifact.upload",
        "group.create",
        "group.crl",
        "enroll.refuse",
        "device.revoke",
        "device.assign",
        "device.state",
        "device.refuse",
        "deployment.create",
        "audit.submit",
    }
)

#: Who acted: an operator token (``id`` its name, ``role`` its role), a device, a
#: key (``id`` its key id), a local user, or the system itself (e.g. the kill switch).
ACTOR_KINDS = frozenset({"operator", "device", "key", "user", "system"})

_FIELDS = frozenset({"v", "index", "time", "actor", "action", "subject", "details"})
_ACTOR_FIELDS = frozenset({"kind", "id", "role"})
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")
_ACTION = re.compile(r"[a-z]+(\.[a-z]+)+")


@dataclass(frozen=True)
class Actor:
    """Who did it (see :data:`ACTOR_KINDS`)."""

    kind: str
    id: str
    role: str | None = None

    def to_json(self) -> dict[str, str]:
        value = {"kind": self.kind, "id": self.id}
        if self.role is not None:
            value["role"] = self.role
        return value


@dataclass(frozen=True)
class AuditEvent:
    """What happened, before the log gives it a position."""

    time: dt.datetime
    actor: Actor
    action: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """An event at its position in the log (the result of :func:`parse_entry`)."""

    index: int
    event: AuditEvent


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when not zero (one spelling per instant)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("an audit time must carry its time zone (use UTC)")
    utc = when.astimezone(dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{utc.microsecond:06d}Z" if utc.microsecond else "Z")


def _parse_time(text: object) -> dt.datetime:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise AuditEntryError(f"time {text!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)")
    # Fixed-width fields (the pattern above), so the only other spelling of an
    # instant is a zero fraction, refused below; no strptime (a verifier parses
    # millions of these).
    micro = int(text[20:26]) if len(text) > 20 else 0
    if len(text) > 20 and not micro:
        raise AuditEntryError(f"time {text!r} is not in canonical form (zero fraction)")
    try:
        return dt.datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            micro,
            tzinfo=dt.UTC,
        )
    except ValueError:
        raise AuditEntryError(f"time {text!r} is not a valid date and time") from None


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise AuditEntryError(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _check_details(value: object, depth: int = 0) -> None:
    """JSON values without floats, at most :data:`MAX_DETAILS_DEPTH` levels deep.

    Exact-type tests first (a verifier checks millions of entries); subclasses of
    dict and list, which a caller may pass, take the slower isinstance path.
    """
    if depth > MAX_DETAILS_DEPTH:
        raise AuditEntryError(f"details nest deeper than {MAX_DETAILS_DEPTH} levels")
    if type(value) is dict or isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise AuditEntryError("details keys must be strings")
            _check_value(item, depth)
    elif type(value) is list or isinstance(value, list):
        for item in value:
            _check_value(item, depth)
    else:
        _check_value(value, depth - 1)


def _check_value(item: object, depth: int) -> None:
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return
    if kind is int:
        if not -MAX_INDEX - 1 <= item <= MAX_INDEX:  # type: ignore[operator]
            raise AuditEntryError("details integers must fit 64 bits")
        return
    if isinstance(item, dict | list):
        _check_details(item, depth + 1)
        return
    raise AuditEntryError(
        f"details may hold strings, integers, booleans, null, lists and objects, "
        f"not {kind.__name__} (write figures as integers or decimal strings)"
    )


def _check_event(event: AuditEvent) -> None:
    if event.action not in ACTIONS:
        raise AuditEntryError(f"unknown action {event.action!r}")
    if event.actor.kind not in ACTOR_KINDS:
        raise AuditEntryError(f"unknown actor kind {event.actor.kind!r}")
    _check_text("actor id", event.actor.id)
    if event.actor.role is not None:
        _check_text("actor role", event.actor.role)
    _check_text("subject", event.subject)
    details = event.details
    if not isinstance(details, dict):
        if not isinstance(details, Mapping):
            raise AuditEntryError("details must be an object")
        details = dict(details)
    _check_details(details)


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _canonical(value: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def encode_entry(index: int, event: AuditEvent) -> bytes:
    """The canonical bytes of ``event`` at position ``index`` (what the leaf hashes).

    Raises :class:`AuditEntryError` for an event that cannot be recorded (unknown
    action, float in details, too large), so a log never stores what it cannot verify.
    """
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"entry index {index} out of range")
    _check_event(event)
    value = {
        "v": FORMAT_VERSION,
        "index": index,
        "time": format_time(event.time),
        "actor": event.actor.to_json(),
        "action": event.action,
        "subject": event.subject,
        "details": dict(event.details),
    }
    try:
        data = _canonical(value)
    except UnicodeEncodeError:
        raise AuditEntryError("entry text is not valid Unicode (lone surrogate)") from None
    if len(data) > MAX_ENTRY_SIZE:
        raise AuditEntryError(f"entry of {len(data)} bytes exceeds {MAX_ENTRY_SIZE} bytes")
    return data


def _refuse_float(text: str) -> Any:
    raise AuditEntryError(f"number {text} is not an integer")


_DECODER = json.JSONDecoder(parse_float=_refuse_float, parse_constant=_refuse_float)


def _text_ok(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TEXT


def _check_actor(actor: object) -> None:
    if type(actor) is not dict or not {"kind", "id"} <= actor.keys() <= _ACTOR_FIELDS:
        raise AuditEntryError("actor must be an object with kind, id and optional role")
    if type(actor["kind"]) is not str or actor["kind"] not in ACTOR_KINDS:
        raise AuditEntryError(f"unknown actor kind {actor['kind']!r}")
    if not _text_ok(actor["id"]) or ("role" in actor and not _text_ok(actor["role"])):
        raise AuditEntryError(f"actor id and role are strings of 1 to {MAX_TEXT} characters")


def _validate(data: bytes) -> tuple[dict[str, Any], dt.datetime]:
    """Every check of :func:`parse_entry`, on the decoded dict (no objects built)."""
    if len(data) > MAX_ENTRY_SIZE:
        raise AuditEntryError(f"entry of {len(data)} bytes exceeds {MAX_ENTRY_SIZE} bytes")
    try:
        # A duplicate key survives json.loads as one key, and the canonical
        # re-encoding at the end then differs from the input: refused there.
        value = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, AuditEntryError):
            raise
        raise AuditEntryError(f"entry is not UTF-8 JSON: {type(exc).__name__}") from None
    if type(value) is not dict or value.keys() != _FIELDS:
        raise AuditEntryError(f"entry must be an object with exactly the fields {sorted(_FIELDS)}")
    version = value["v"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise AuditEntryError(f"unsupported entry format version {version!r}")
    index = value["index"]
    if type(index) is not int or not 0 <= index <= MAX_INDEX:
        raise AuditEntryError("index must be a non-negative integer")
    _check_actor(value["actor"])
    action = value["action"]
    if type(action) is not str or action not in ACTIONS:
        if type(action) is not str or not _ACTION.fullmatch(action):
            raise AuditEntryError("action must be a dotted name")
        raise AuditEntryError(f"unknown action {action!r}")
    _check_text("subject", value["subject"])
    if type(value["details"]) is not dict:
        raise AuditEntryError("details must be an object")
    _check_details(value["details"])
    when = _parse_time(value["time"])
    try:
        canonical = _canonical(value)
    except UnicodeEncodeError:
        raise AuditEntryError("entry text is not valid Unicode (lone surrogate)") from None
    if canonical != data:
        raise AuditEntryError("entry is not in canonical form (sorted keys, no spaces, UTF-8)")
    return value, when


def entry_index(data: bytes) -> int:
    """Check ``data`` exactly as :func:`parse_entry` does; return only its index.

    The verifier's path: it checks millions of entries and needs no objects.
    """
    index: int = _validate(data)[0]["index"]
    return index


def parse_entry(data: bytes) -> AuditEntry:
    """Strictly parse one entry: canonical JSON of the fields above, nothing else."""
    value, when = _validate(data)
    actor = value["actor"]
    event = AuditEvent(
        when,
        Actor(actor["kind"], actor["id"], actor.get("role")),
        value["action"],
        value["subject"],
        value["details"],
    )
    return AuditEntry(value["index"], event)
