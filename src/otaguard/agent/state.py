"""The agent's persisted state: what it is doing, what it owes the server, what it installed.

One JSON document, ``agent/state.json`` in the device directory, replaced
atomically (``_atomic``: temporary file, fsync, rename) after every transition
of the state machine (:mod:`otaguard.agent.machine`), so a kill or a power cut
leaves either the state before a transition or the state after it.

Loading validates the whole document against its schema (:func:`from_json`):
every field, type, enum value and size. Nothing the agent acts on is taken
from it unchecked; what it says about the device is re-derived from the device
itself (the bootloader's records, the slots), and a plan's downloads are
verified again against the plan's signed lengths and hashes before install.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otaguard.errors import StorageError

FORMAT = 1
MAX_STATE_BYTES = 8 * 1024 * 1024
MAX_TEXT = 2048
MAX_URL = 2048
MAX_DIRECTOR = 1 << 20
MAX_TARGETS = 64
MAX_OUTBOX = 10_000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class Phase(enum.Enum):
    IDLE = "idle"  # nothing in progress: the next step is a check-in
    DOWNLOAD = "download"  # a verified plan: fetch its targets
    INSTALL = "install"  # targets on storage, verified: write the inactive slot
    REBOOT = "reboot"  # installed and committed: reset into the new slot
    TRIAL = "trial"  # running the new image on trial: health check, confirm or reject
    REPORT = "report"  # the outcome is known: send events and the new state


#: Phases that carry out a plan (and must have one).
PLAN_PHASES = frozenset({Phase.DOWNLOAD, Phase.INSTALL, Phase.REBOOT, Phase.TRIAL})


class Result(enum.Enum):
    """How the last cycle ended (what ``agent run --once`` exits with)."""

    UP_TO_DATE = "up-to-date"
    UPDATED = "updated"
    REFUSED = "refused"
    REVERTED = "reverted"
    FAILED = "failed"  # transient failures outlasted their retries this cycle


EVENT_KINDS = frozenset(
    {
        "download-started",
        "download-failed",
        "downloaded",
        "install-failed",
        "installed",
        "boot-trial",
        "confirmed",
        "reverted",
        "refused",
    }
)


@dataclass(frozen=True)
class Record:
    """One event for the server (docs/server.md, ``POST /api/v1/device/events``)."""

    id: str
    time: str
    kind: str
    ecu: str | None
    target: str | None
    result: str  # "ok" | "failed"
    failure: str | None  # "transient" | "deterministic" | None
    check: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "ecu": self.ecu,
            "target": self.target,
            "result": self.result,
            "failure": self.failure,
            "check": self.check,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PlannedTarget:
    """One component's verified instruction (as the image repository describes the target)."""

    component: str
    path: str
    length: int
    hashes: Mapping[str, str]
    kind: str | None = None  # "full" or "delta", once downloaded
    image_id: str | None = None  # the image it installs (SHA-256 of its signed header)

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "path": self.path,
            "length": self.length,
            "hashes": dict(self.hashes),
            "kind": self.kind,
            "image_id": self.image_id,
        }


@dataclass(frozen=True)
class Plan:
    """A check-in's answer, verified: the director's bytes and nonce, and what to install."""

    etag: str
    nonce: str
    director: bytes
    director_version: int
    metadata_url: str
    targets_url: str
    targets: tuple[PlannedTarget, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "nonce": self.nonce,
            "director": base64.b64encode(self.director).decode("ascii"),
            "director_version": self.director_version,
            "metadata_url": self.metadata_url,
            "targets_url": self.targets_url,
            "targets": [t.to_json() for t in self.targets],
        }


@dataclass(frozen=True)
class Installed:
    """What the agent installed and confirmed on a component (the target's name and image)."""

    target: str
    sha256: str  # of the image file as installed (a delta's rebuilt image)


@dataclass(frozen=True)
class State:
    salt: str  # random, made once: event ids are derived from it and ``seq``
    phase: Phase = Phase.IDLE
    seq: int = 0
    enrolled: bool = False
    poll_interval: int | None = None
    etag: str | None = None  # the last answer fully acted on (sent as If-None-Match)
    director_version: int = 0  # the newest director metadata accepted (rollback floor)
    reported_local: str | None = None  # hash of the state body last accepted by the server
    reported_server: str | None = None  # ... and the server's name for it
    installed: Mapping[str, Installed] = field(default_factory=dict)
    attempts: Mapping[str, int] = field(default_factory=dict)
    plan: Plan | None = None
    outbox: tuple[Record, ...] = ()
    result: Result | None = None

    def event_id(self, offset: int = 0) -> str:
        """A UUID (version 4 layout) unique to this device and sequence number."""
        digest = hashlib.sha256(f"{self.salt}:{self.seq + offset}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "salt": self.salt,
            "phase": self.phase.value,
            "seq": self.seq,
            "enrolled": self.enrolled,
            "poll_interval": self.poll_interval,
            "etag": self.etag,
            "director_version": self.director_version,
            "reported_local": self.reported_local,
            "reported_server": self.reported_server,
            "installed": {
                k: {"target": v.target, "sha256": v.sha256}
                for k, v in sorted(self.installed.items())
            },
            "attempts": dict(sorted(self.attempts.items())),
            "plan": None if self.plan is None else self.plan.to_json(),
            "outbox": [r.to_json() for r in self.outbox],
            "result": None if self.result is None else self.result.value,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode()


# -- loading: the schema, checked field by field --------------------------------------------


class _Bad(Exception):
    pass


def _obj(value: object, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where} is not an object")
    if set(value) != keys:
        extra, missing = sorted(set(value) - keys), sorted(keys - set(value))
        raise _Bad(f"{where}: unexpected {extra} / missing {missing}")
    return value


def _text(
    value: object, where: str, limit: int = MAX_TEXT, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _Bad(f"{where} is not a string of at most {limit} characters")
    if pattern is not None and not pattern.match(value):
        raise _Bad(f"{where} has the wrong form")
    return value


def _opt_text(
    value: object, where: str, limit: int = MAX_TEXT, pattern: re.Pattern[str] | None = None
) -> str | None:
    return None if value is None else _text(value, where, limit, pattern)


def _int(value: object, where: str, low: int = 0, high: int = 1 << 62) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Bad(f"{where} is not an integer in [{low}, {high}]")
    return value


def _enum(cls: type[enum.Enum], value: object, where: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise _Bad(f"{where}: {str(value)[:40]!r} is not a {cls.__name__}") from None


def _record(value: object, where: str) -> Record:
    data = _obj(
        value,
        where,
        {"id", "time", "kind", "ecu", "target", "result", "failure", "check", "detail"},
    )
    kind = _text(data["kind"], f"{where}.kind")
    if kind not in EVENT_KINDS:
        raise _Bad(f"{where}.kind: unknown event kind")
    result = _text(data["result"], f"{where}.result")
    failure = _opt_text(data["failure"], f"{where}.failure")
    if result not in ("ok", "failed") or failure not in (None, "transient", "deterministic"):
        raise _Bad(f"{where}: bad result or failure")
    return Record(
        _text(data["id"], f"{where}.id", 36),
        _text(data["time"], f"{where}.time", 40),
        kind,
        _opt_text(data["ecu"], f"{where}.ecu", 64, _NAME),
        _opt_text(data["target"], f"{where}.target"),
        result,
        failure,
        _opt_text(data["check"], f"{where}.check", 64),
        _text(data["detail"], f"{where}.detail"),
    )


def _hashes(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not 1 <= len(value) <= 8:
        raise _Bad(f"{where} is not a map of 1 to 8 hashes")
    return {_text(k, f"{where} key", 32): _text(v, f"{where}.{k}", 256) for k, v in value.items()}


def _planned(value: object, where: str) -> PlannedTarget:
    data = _obj(value, where, {"component", "path", "length", "hashes", "kind", "image_id"})
    kind = _opt_text(data["kind"], f"{where}.kind")
    if kind not in (None, "full", "delta"):
        raise _Bad(f"{where}.kind is not full or delta")
    return PlannedTarget(
        _text(data["component"], f"{where}.component", 64, _NAME),
        _text(data["path"], f"{where}.path"),
        _int(data["length"], f"{where}.length", 1),
        _hashes(data["hashes"], f"{where}.hashes"),
        kind,
        _opt_text(data["image_id"], f"{where}.image_id", 64, _HEX64),
    )


def _plan(value: object) -> Plan | None:
    if value is None:
        return None
    data = _obj(
        value,
        "plan",
        {"etag", "nonce", "director", "director_version", "metadata_url", "targets_url", "targets"},
    )
    try:
        director = base64.b64decode(
            _text(data["director"], "plan.director", MAX_DIRECTOR * 2), validate=True
        )
    except (binascii.Error, ValueError):
        raise _Bad("plan.director is not base64") from None
    targets = data["targets"]
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS:
        raise _Bad(f"plan.targets is not a list of 1 to {MAX_TARGETS} targets")
    return Plan(
        _text(data["etag"], "plan.etag", 256),
        _text(data["nonce"], "plan.nonce", 32, _HEX32),
        director,
        _int(data["director_version"], "plan.director_version"),
        _text(data["metadata_url"], "plan.metadata_url", MAX_URL),
        _text(data["targets_url"], "plan.targets_url", MAX_URL),
        tuple(_planned(t, f"plan.targets[{i}]") for i, t in enumerate(targets)),
    )


_KEYS = {
    "format", "salt", "phase", "seq", "enrolled", "poll_interval", "etag", "director_version",
    "reported_local", "reported_server", "installed", "attempts", "plan", "outbox", "result",
}  # fmt: skip


def from_json(value: object) -> State:
    """A :class:`State` from its JSON form, every field checked (:class:`StorageError` if not)."""
    try:
        return _state(value)
    except _Bad as exc:
        raise StorageError(f"agent state: {exc}") from None


def _state(value: object) -> State:
    data = _obj(value, "state", _KEYS)
    if data["format"] != FORMAT:
        raise _Bad("unsupported format")
    phase = _enum(Phase, data["phase"], "phase")
    plan = _plan(data["plan"])
    if (phase in PLAN_PHASES and plan is None) or (phase is Phase.IDLE and plan is not None):
        raise _Bad(f"phase {phase.value} and the plan disagree")
    if not isinstance(data["enrolled"], bool):
        raise _Bad("enrolled is not a boolean")
    installed = data["installed"]
    if not isinstance(installed, dict) or len(installed) > MAX_TARGETS:
        raise _Bad("installed is not a map")
    attempts = data["attempts"]
    if not isinstance(attempts, dict) or len(attempts) > 16:
        raise _Bad("attempts is not a map")
    outbox = data["outbox"]
    if not isinstance(outbox, list) or len(outbox) > MAX_OUTBOX:
        raise _Bad("outbox is not a list")
    interval = data["poll_interval"]
    return State(
        salt=_text(data["salt"], "salt", 32, _HEX32),
        phase=phase,
        seq=_int(data["seq"], "seq"),
        enrolled=data["enrolled"],
        poll_interval=None if interval is None else _int(interval, "poll_interval", 1, 86400 * 30),
        etag=_opt_text(data["etag"], "etag", 256),
        director_version=_int(data["director_version"], "director_version"),
        reported_local=_opt_text(data["reported_local"], "reported_local", 64, _HEX64),
        reported_server=_opt_text(data["reported_server"], "reported_server", 256),
        installed={
            _text(k, "installed key", 64, _NAME): _installed(v, f"installed.{k}")
            for k, v in installed.items()
        },
        attempts={
            _text(k, "attempts key", 32): _int(v, f"attempts.{k}") for k, v in attempts.items()
        },
        plan=plan,
        outbox=tuple(_record(r, f"outbox[{i}]") for i, r in enumerate(outbox)),
        result=None if data["result"] is None else _enum(Result, data["result"], "result"),
    )


def _installed(value: object, where: str) -> Installed:
    data = _obj(value, where, {"target", "sha256"})
    return Installed(
        _text(data["target"], f"{where}.target"),
        _text(data["sha256"], f"{where}.sha256", 64, _HEX64),
    )


def parse(data: bytes) -> State:
    if len(data) > MAX_STATE_BYTES:
        raise StorageError("agent state: larger than the cap")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"agent state: not JSON ({exc})") from None
    return from_json(value)
