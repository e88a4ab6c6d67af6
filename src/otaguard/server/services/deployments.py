"""Deployments: the operator's instruction that devices get a target (the director's input).

A deployment names a published target and either devices or an enrolment group;
it assigns the target to every ECU of those devices whose hardware id the
target's (signed) ``hardware_ids`` lists, and bumps each affected device's
assignment generation: the version of its next director metadata, so the
device sees a new instruction and can refuse an older one. Campaigns (waves,
kill switch) will create deployments through this function.

Audited in the same transaction: ``deployment.create`` (subject: the target; who,
which group or how many devices, how many ECUs) and, per device given an
assignment, ``device.assign`` (subject: the device; the target, the ECUs, the
deployment), the record of why a vehicle's software changed. ``context`` (e.g. a
campaign's id, wave and approvals) is copied into both, so a vehicle's history
names the campaign and approvals behind each change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from otaguard.audit.entry import Actor, AuditEvent
from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import Assignment, Deployment, Device, Ecu, EnrollmentGroup
from otaguard.server.repo_store import TargetIndex
from otaguard.server.services import audit

MAX_DEVICES = 10_000


@dataclass(frozen=True)
class AssignmentMade:
    device_id: str
    ecu: str
    target: str


@dataclass
class DeploymentMade:
    id: int
    target: str
    group: str | None
    assignments: list[AssignmentMade] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # devices with no matching, live ECU


def _chosen_devices(session: Session, devices: Sequence[str], group: str | None) -> list[Device]:
    """The group's devices, or the named ones (every name must exist), in id order."""
    if group is not None:
        found = session.scalars(
            select(EnrollmentGroup).where(EnrollmentGroup.name == group)
        ).one_or_none()
        if found is None:
            raise ApiError(404, "not-found", f"no enrolment group {group!r}")
        return list(
            session.scalars(select(Device).where(Device.group_id == found.id).order_by(Device.id))
        )
    wanted = sorted(set(devices))
    rows = list(session.scalars(select(Device).where(Device.id.in_(wanted)).order_by(Device.id)))
    missing = sorted(set(wanted) - {d.id for d in rows})
    if missing:
        raise ApiError(404, "not-found", f"no device {missing[0]!r}")
    return rows


def deploy(
    db: Database,
    index: TargetIndex | None,
    *,
    target: str,
    devices: Sequence[str] = (),
    group: str | None = None,
    by: str | Operator,
    now: int,
    actor: Actor | None = None,
    context: Mapping[str, Any] | None = None,
) -> DeploymentMade:
    """Assign ``target``; ``by`` is the operator (or the name of who decided, with
    ``actor`` for the audit log, e.g. the campaign evaluator)."""
    if isinstance(by, Operator):
        actor = actor or audit.operator(by)
        extra = audit.by_operator(by, context or {})
        by = by.name
    else:
        actor = actor or Actor("operator", by)
        extra = dict(context or {})
    info = index.targets.get(target) if index is not None else None
    if info is None:
        raise ApiError(422, "unknown-target", f"{target!r} is not in the published repository")
    if info.custom.get("payload_kind") == "delta":
        raise ApiError(422, "invalid-request", f"{target} is a delta: deploy the full image")
    hardware_ids = set(info.custom.get("hardware_ids") or ())
    if bool(devices) == (group is not None):
        raise ApiError(422, "invalid-request", "name devices or a group, not both")
    with db.writing() as session:
        rows = _chosen_devices(session, devices, group)
        if len(rows) > MAX_DEVICES:
            raise ApiError(422, "invalid-request", f"at most {MAX_DEVICES} devices per deployment")
        deployment = Deployment(target=target, group_name=group, created_by=by, created_at=now)
        session.add(deployment)
        session.flush()
        made = DeploymentMade(deployment.id, target, group)
        for device in rows:
            ecus = (
                []
                if device.revoked_at is not None
                else list(
                    session.scalars(
                        select(Ecu)
                        .where(Ecu.device_id == device.id, Ecu.hardware_id.in_(hardware_ids))
                        .order_by(Ecu.serial)
                    )
                )
            )
            if not ecus:
                made.skipped.append(device.id)
                continue
            for ecu in ecus:
                session.merge(
                    Assignment(
                        device_id=device.id,
                        ecu_serial=ecu.serial,
                        target=target,
                        deployment_id=deployment.id,
                        assigned_at=now,
                    )
                )
                made.assignments.append(AssignmentMade(device.id, ecu.serial, target))
            device.generation += 1
        deployment.assignments = len(made.assignments)
        audit.record_all(session, _events(made, hardware_ids, len(rows), actor, extra, now))
        return made


def _events(
    made: DeploymentMade,
    hardware_ids: set[str],
    devices: int,
    actor: Actor,
    extra: Mapping[str, Any],
    now: int,
) -> list[AuditEvent]:
    time = audit.when(now)
    summary = {
        **extra,
        "deployment": made.id,
        "target": made.target,
        "group": made.group,
        "hardware_ids": sorted(str(h)[:64] for h in hardware_ids)[:50],  # signed, of any length
        "devices": devices,
        "assignments": len(made.assignments),
        "skipped": len(made.skipped),
    }
    events = [AuditEvent(time, actor, "deployment.create", made.target, summary)]
    per_device: dict[str, list[str]] = {}
    for assignment in made.assignments:
        per_device.setdefault(assignment.device_id, []).append(assignment.ecu)
    for device_id, ecus in per_device.items():
        details = {**extra, "deployment": made.id, "target": made.target, "ecus": ecus}
        events.append(AuditEvent(time, actor, "device.assign", device_id, details))
    return events
