"""Devices: the lookup behind every signed request, state reports, events, revocation, listing.

Audited in the transaction of the change: a state report that changes what an ECU
runs (``device.state``: every ECU, and the configuration's software id), each new
install/boot/revert/refusal event (``device.install``, ``device.boot``,
``device.revert``, ``device.refuse``; download progress is telemetry, not recorded),
and revocation (``device.revoke``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from otaguard.audit.entry import AuditEvent
from otaguard.audit.records import software_id
from otaguard.crypto.keys import PublicKey, load_public_key
from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import (
    Assignment,
    Device,
    DeviceEvent,
    DeviceNonce,
    Ecu,
    EnrollmentGroup,
)
from otaguard.server.services import audit


@dataclass(frozen=True)
class DeviceRecord:
    """What a signed request needs to know about the device it names."""

    id: str
    public_key: PublicKey
    revoked: bool
    generation: int
    state_hash: str | None
    group_id: int


_LOOKUP = select(
    Device.id,
    Device.public_key_der,
    Device.revoked_at,
    Device.generation,
    Device.state_hash,
    Device.group_id,
).where(Device.id == bindparam("id"))


def lookup(db: Database, device_id: str) -> DeviceRecord | None:
    """Only the columns a signed request needs (not the certificate chain), one round trip."""
    row = db.lookup(_LOOKUP, {"id": device_id})
    if row is None:
        return None
    id_, key_der, revoked_at, generation, state, group_id = row
    return DeviceRecord(
        id_, load_public_key(key_der), revoked_at is not None, generation, state, group_id
    )


def record_nonce(session: Session, device_id: str, nonce: str, time: int) -> None:
    """Record a state-changing request's nonce in the caller's transaction (replay: 401)."""
    try:
        with session.begin_nested():
            session.add(DeviceNonce(device_id=device_id, nonce=nonce, time=time))
    except IntegrityError:
        raise ApiError(401, "request-replay", "this request's nonce was already used") from None


def forget_nonces(db: Database, older_than: int) -> int:
    """Nonces of requests that would now be refused as stale anyway."""
    with db.writing() as session:
        result = session.execute(delete(DeviceNonce).where(DeviceNonce.time < older_than))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EcuState:
    serial: str
    hardware_id: str
    target: str | None
    version: str | None
    security_counter: int
    sha256: str | None
    slot: str | None
    boot: str


_STATE_FIELDS = ("target", "version", "security_counter", "sha256", "slot", "boot")


def store_state(
    session: Session, device_id: str, ecus: Sequence[EcuState], digest: str, now: int
) -> None:
    known = {e.serial: e for e in session.scalars(select(Ecu).where(Ecu.device_id == device_id))}
    unknown = sorted({e.serial for e in ecus} - set(known))
    if unknown:
        raise ApiError(422, "unknown-ecu", f"no ECU {unknown[0]!r} was enrolled for this device")
    changed = []
    for item in ecus:
        row = known[item.serial]
        if row.hardware_id != item.hardware_id:
            raise ApiError(
                422, "hardware-id", f"ECU {item.serial} was enrolled as {row.hardware_id}"
            )
        if any(getattr(row, name) != getattr(item, name) for name in _STATE_FIELDS):
            changed.append(item.serial)
        for name in _STATE_FIELDS:
            setattr(row, name, getattr(item, name))
    device = session.get(Device, device_id)
    assert device is not None
    device.state_hash = digest
    device.state_at = now
    device.last_seen = now
    if changed:
        every = [
            {
                "serial": r.serial,
                "hardware_id": r.hardware_id,
                **{name: getattr(r, name) for name in _STATE_FIELDS},
            }
            for r in sorted(known.values(), key=lambda r: r.serial)
        ]
        details = {
            "ecus": every,
            "changed": changed,
            "software_id": software_id(every),
            "state": digest,
        }
        audit.record_device(session, device_id, "device.state", details, now=now)


# -- events ------------------------------------------------------------------------------


#: device event kinds -> the audit action that records them (download progress: none)
EVENT_ACTIONS = {
    "installed": "device.install",
    "install-failed": "device.install",
    "boot-trial": "device.boot",
    "confirmed": "device.boot",
    "reverted": "device.revert",
    "refused": "device.refuse",
}


def store_events(
    session: Session,
    device_id: str,
    events: Sequence[dict[str, Any]],
    now: int,
    on_new: Callable[[list[dict[str, Any]]], object] | None = None,
) -> list[dict[str, Any]]:
    """Insert the events not seen before (idempotent by device and event id); the
    security-relevant ones among the new are audited. ``on_new`` sees the new events (in
    order) before the audit append, which must come last in the transaction. The new events."""
    if not events:
        return []
    rows = [{**event, "device_id": device_id, "received_at": now} for event in events]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(DeviceEvent)
        .on_conflict_do_nothing(index_elements=["device_id", "id"])
        .returning(DeviceEvent.id)
    )
    new = {row.id for row in session.execute(statement, rows)} if rows else set()
    actor, time = audit.device(device_id), audit.when(now)
    recorded = []
    fresh = []
    for event in events:
        if event["id"] in new:
            new.discard(event["id"])  # an id twice in one batch is one event
            fresh.append(event)
            if event["kind"] in EVENT_ACTIONS:
                action = EVENT_ACTIONS[event["kind"]]
                recorded.append(AuditEvent(time, actor, action, device_id, _event_details(event)))
    if on_new is not None:
        on_new(fresh)
    if recorded:
        audit.record_all(session, recorded)
    return fresh


def hardware_of(db: Database, group_id: int) -> str:
    """The hardware id of a device's enrolment group (the push topic it subscribes to)."""
    with db.reading() as session:
        group = session.get(EnrollmentGroup, group_id)
        return group.hardware_id if group is not None else ""


def _event_details(event: dict[str, Any]) -> dict[str, Any]:
    keys: tuple[str, ...] = (
        "id",
        "time",
        "kind",
        "ecu",
        "target",
        "result",
        "failure",
        "check",
        "detail",
    )
    if event.get("campaign"):
        keys += ("campaign",)
    return {("event" if k == "id" else k): event.get(k) for k in keys}


# -- operators ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EcuView(EcuState):
    """An ECU as operators see it: what it reported, and what it is assigned."""

    assigned: str | None


@dataclass(frozen=True)
class DeviceSummary:
    id: str
    group: str
    region: str
    enrolled_at: int
    last_seen: int | None
    revoked_at: int | None
    generation: int


@dataclass(frozen=True)
class EventView:
    id: str
    time: str
    kind: str
    ecu: str | None
    target: str | None
    result: str
    failure: str | None
    check: str | None
    detail: str | None
    received_at: int


@dataclass(frozen=True)
class DeviceDetail:
    summary: DeviceSummary
    hardware_id: str
    tags: dict[str, str]
    cert_serial: str
    state_at: int | None
    ecus: list[EcuView]
    history: list[EventView]


def _summary(device: Device, group: EnrollmentGroup, last_seen: int | None) -> DeviceSummary:
    return DeviceSummary(
        device.id,
        group.name,
        group.region,
        device.enrolled_at,
        last_seen,
        device.revoked_at,
        device.generation,
    )


def list_devices(
    db: Database, *, after: str | None, limit: int, pending: dict[str, int]
) -> list[DeviceSummary]:
    with db.reading() as session:
        query = (
            select(Device, EnrollmentGroup)
            .join(EnrollmentGroup, Device.group_id == EnrollmentGroup.id)
            .order_by(Device.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(Device.id > after)
        return [
            _summary(d, g, max(d.last_seen or 0, pending.get(d.id, 0)) or None)
            for d, g in session.execute(query)
        ]


def show_device(
    db: Database, device_id: str, *, history: int, pending: dict[str, int]
) -> DeviceDetail:
    with db.reading() as session:
        device = session.get(Device, device_id)
        if device is None:
            raise ApiError(404, "not-found", f"no device {device_id!r}")
        group = session.get(EnrollmentGroup, device.group_id)
        assert group is not None
        assigned = {
            a.ecu_serial: a.target
            for a in session.scalars(select(Assignment).where(Assignment.device_id == device_id))
        }
        ecus = [
            EcuView(
                e.serial,
                e.hardware_id,
                e.target,
                e.version,
                e.security_counter,
                e.sha256,
                e.slot,
                e.boot,
                assigned.get(e.serial),
            )
            for e in session.scalars(
                select(Ecu).where(Ecu.device_id == device_id).order_by(Ecu.serial)
            )
        ]
        events = [
            EventView(
                e.id,
                e.time,
                e.kind,
                e.ecu,
                e.target,
                e.result,
                e.failure,
                e.check,
                e.detail,
                e.received_at,
            )
            for e in session.scalars(
                select(DeviceEvent)
                .where(DeviceEvent.device_id == device_id)
                .order_by(DeviceEvent.received_at.desc(), DeviceEvent.time.desc())
                .limit(history)
            )
        ]
        seen = max(device.last_seen or 0, pending.get(device.id, 0)) or None
        return DeviceDetail(
            _summary(device, group, seen),
            group.hardware_id,
            {str(k): str(v) for k, v in group.tags.items()},
            device.cert_serial,
            device.state_at,
            ecus,
            events,
        )


def revoke(db: Database, device_id: str, *, now: int, by: Operator) -> DeviceSummary:
    with db.writing() as session:
        device = session.get(Device, device_id)
        if device is None:
            raise ApiError(404, "not-found", f"no device {device_id!r}")
        group = session.get(EnrollmentGroup, device.group_id)
        assert group is not None
        if device.revoked_at is None:
            device.revoked_at = now
            details = {"reason": "operator", "group": group.name, "cert_serial": device.cert_serial}
            audit.record(
                session,
                actor=audit.operator(by),
                action="device.revoke",
                subject=device_id,
                details=audit.by_operator(by, details),
                now=now,
            )
        return _summary(device, group, device.last_seen)
