"""The agent's persisted state: what it is doing, what it owes the server, what it installed.

One JSON document, ``agent/state.json`` in the device directory, replaced
atomically (``_atomic``: temporary file, fsync, rename) after every transition
of the state machine (:mod:`otaguard.agent.machine`), so a kill or a power cut
leaves either the state before a transition or the state after it.

Loading validates the whole document against its JSON Schema (:data:`SCHEMA`,
through ``otaguard._statefile`` like every state file): every field, type,
enum value and size, and that a phase carrying out a plan has one. Nothing
the agent acts on is taken from it unchecked; what it says about the device
is re-derived from the device itself (the bootloader's records, the slots),
and a plan's downloads are verified again against the plan's signed lengths
and hashes before install.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otaguard._statefile import parse_state
from otaguard.errors import StorageError
from otaguard.protocol.events import EVENT_KINDS

FORMAT = 1
MAX_STATE_BYTES = 8 * 1024 * 1024
MAX_TEXT = 2048
MAX_URL = 2048
MAX_DIRECTOR = 1 << 20
MAX_TARGETS = 64
MAX_OUTBOX = 10_000


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
    ABANDONED = "abandoned"  # the server halted the campaign: the download was dropped
    INCOMPATIBLE = "incompatible"  # the offer cannot be installed on this device


#: Campaign ids as the server names them (docs/server.md, the campaign contract).
CAMPAIGN_RE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


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
    campaign: str | None = None  # the campaign whose offer this event is about, if any

    def to_json(self) -> dict[str, Any]:
        """The event as sent; ``campaign`` only when the answer named one (older servers)."""
        out: dict[str, Any] = {
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
        if self.campaign is not None:
            out["campaign"] = self.campaign
        return out


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
    campaign: str | None = None  # the campaign the answer named (its events carry it)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
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
class InFlight:
    """An offer the server may count as in progress on this device (for ``abandon``).

    Set when a plan is made and kept while its download waits for a later cycle
    (a transient failure, a restart), so that a halt announced at a later
    check-in still finds what to abandon; cleared when the offer ends.
    """

    campaign: str | None
    stage: str  # "download" (nothing written to flash yet) | "install" (flash written)
    targets: tuple[tuple[str, str], ...]  # (component, target path)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "stage": self.stage,
            "targets": [list(t) for t in self.targets],
        }


@dataclass(frozen=True)
class Health:
    """The health window being observed (``POST /api/v1/device/health``).

    ``since`` is when the window began (a confirmed update, or the previous
    report); ``campaign`` is the campaign whose update was confirmed (None: the
    device reports as control); resets and crashes are counted by the agent
    from the boots it sees (every reset, and the slots the bootloader rejected).
    """

    since: str
    campaign: str | None = None
    resets: int = 0
    crashes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "campaign": self.campaign,
            "resets": self.resets,
            "crashes": self.crashes,
        }


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
    inflight: InFlight | None = None
    health: Health | None = None

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
            "inflight": None if self.inflight is None else self.inflight.to_json(),
            "health": None if self.health is None else self.health.to_json(),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode()


# -- loading: the JSON Schema (``otaguard._statefile``), then the dataclasses -----------------

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"}
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_TAG = {"type": "string", "maxLength": 256}
_URL = {"type": "string", "maxLength": MAX_URL}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 1 << 62}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, schema]}


def _strict(properties: dict[str, Any], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every property required but ``optional`` ones (added later: older files stay valid)."""
    return {
        "type": "object",
        "required": sorted(set(properties) - optional),
        "additionalProperties": False,
        "properties": properties,
    }


_CAMPAIGN = {"type": "string", "pattern": CAMPAIGN_RE}


_RECORD = _strict(
    {
        "id": {"type": "string", "maxLength": 36},
        "time": {"type": "string", "maxLength": 40},
        "kind": {"enum": sorted(EVENT_KINDS)},
        "ecu": _nullable(_NAME),
        "target": _nullable(_TEXT),
        "result": {"enum": ["ok", "failed"]},
        "failure": {"enum": [None, "transient", "deterministic"]},
        "check": _nullable({"type": "string", "maxLength": 64}),
        "detail": _TEXT,
        "campaign": _nullable(_CAMPAIGN),
    },
    frozenset({"campaign"}),
)
_PLANNED = _strict(
    {
        "component": _NAME,
        "path": _TEXT,
        "length": {"type": "integer", "minimum": 1, "maximum": 1 << 62},
        "hashes": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 8,
            "propertyNames": {"maxLength": 32},
            "additionalProperties": {"type": "string", "maxLength": 256},
        },
        "kind": {"enum": [None, "full", "delta"]},
        "image_id": _nullable(_HEX64),
    }
)
_PLAN = _strict(
    {
        "etag": _TAG,
        "nonce": _HEX32,
        "director": {
            "type": "string",
            "maxLength": MAX_DIRECTOR * 2,
            "pattern": "^[A-Za-z0-9+/]*={0,2}$",
        },
        "director_version": _COUNT,
        "metadata_url": _URL,
        "targets_url": _URL,
        "targets": {"type": "array", "minItems": 1, "maxItems": MAX_TARGETS, "items": _PLANNED},
        "campaign": _nullable(_CAMPAIGN),
    },
    frozenset({"campaign"}),
)
_INFLIGHT = _strict(
    {
        "campaign": _nullable(_CAMPAIGN),
        "stage": {"enum": ["download", "install"]},
        "targets": {
            "type": "array",
            "maxItems": MAX_TARGETS,
            "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": _TEXT},
        },
    }
)
_HEALTH = _strict(
    {
        "since": {"type": "string", "maxLength": 40},
        "campaign": _nullable(_CAMPAIGN),
        "resets": _COUNT,
        "crashes": _COUNT,
    }
)
SCHEMA: dict[str, Any] = {
    **_strict(
        {
            "format": {"const": FORMAT},
            "salt": _HEX32,
            "phase": {"enum": [p.value for p in Phase]},
            "seq": _COUNT,
            "enrolled": {"type": "boolean"},
            "poll_interval": _nullable({"type": "integer", "minimum": 1, "maximum": 86400 * 30}),
            "etag": _nullable(_TAG),
            "director_version": _COUNT,
            "reported_local": _nullable(_HEX64),
            "reported_server": _nullable(_TAG),
            "installed": {
                "type": "object",
                "maxProperties": MAX_TARGETS,
                "propertyNames": _NAME,
                "additionalProperties": _strict({"target": _TEXT, "sha256": _HEX64}),
            },
            "attempts": {
                "type": "object",
                "maxProperties": 16,
                "propertyNames": {"maxLength": 32},
                "additionalProperties": _COUNT,
            },
            "plan": _nullable(_PLAN),
            "outbox": {"type": "array", "maxItems": MAX_OUTBOX, "items": _RECORD},
            "result": {"enum": [None, *(r.value for r in Result)]},
            "inflight": _nullable(_INFLIGHT),
            "health": _nullable(_HEALTH),
        },
        frozenset({"inflight", "health"}),
    ),
    # a phase that carries out a plan has one; an idle agent has none
    "allOf": [
        {
            "if": {"properties": {"phase": {"enum": sorted(p.value for p in PLAN_PHASES)}}},
            "then": {"properties": {"plan": {"type": "object"}}},
        },
        {
            "if": {"properties": {"phase": {"const": Phase.IDLE.value}}},
            "then": {"properties": {"plan": {"type": "null"}}},
        },
    ],
}


def parse(data: bytes) -> State:
    """The state in ``data``, checked against :data:`SCHEMA` (:class:`StorageError` if not)."""
    value = parse_state(data[: MAX_STATE_BYTES + 1], SCHEMA, "agent state")
    if len(data) > MAX_STATE_BYTES:
        raise StorageError("agent state: larger than the cap")
    return _state(value)


def from_json(value: object) -> State:
    """A :class:`State` from its JSON form (the same checks as :func:`parse`)."""
    return parse(json.dumps(value).encode())


def _record(data: dict[str, Any]) -> Record:
    return Record(**data)


def _planned(data: dict[str, Any]) -> PlannedTarget:
    return PlannedTarget(**data)


def _plan(data: dict[str, Any] | None) -> Plan | None:
    if data is None:
        return None
    try:
        director = base64.b64decode(data["director"], validate=True)
    except (binascii.Error, ValueError):
        raise StorageError("agent state: plan.director is not base64") from None
    return Plan(
        etag=data["etag"],
        nonce=data["nonce"],
        director=director,
        director_version=data["director_version"],
        metadata_url=data["metadata_url"],
        targets_url=data["targets_url"],
        targets=tuple(_planned(t) for t in data["targets"]),
        campaign=data.get("campaign"),
    )


def _state(data: dict[str, Any]) -> State:
    return State(
        salt=data["salt"],
        phase=Phase(data["phase"]),
        seq=data["seq"],
        enrolled=data["enrolled"],
        poll_interval=data["poll_interval"],
        etag=data["etag"],
        director_version=data["director_version"],
        reported_local=data["reported_local"],
        reported_server=data["reported_server"],
        installed={k: Installed(**v) for k, v in data["installed"].items()},
        attempts=dict(data["attempts"]),
        plan=_plan(data["plan"]),
        outbox=tuple(_record(r) for r in data["outbox"]),
        result=None if data["result"] is None else Result(data["result"]),
        inflight=_inflight(data.get("inflight")),
        health=None if data.get("health") is None else Health(**data["health"]),
    )


def _inflight(data: dict[str, Any] | None) -> InFlight | None:
    if data is None:
        return None
    return InFlight(data["campaign"], data["stage"], tuple((c, p) for c, p in data["targets"]))
