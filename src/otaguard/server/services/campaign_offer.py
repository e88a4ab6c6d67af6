"""The campaign side of a check-in: the ETag's share, the offer, the campaign and actions.

The idle check-in stays cheap: running campaigns (and the enrolment groups their selectors
read) are cached per process for :data:`CACHE_TTL` seconds, and the ETag's campaign share
is computed from the cache alone -- for each running campaign whose selector matches the
device's group, one keyed hash says whether the device's wave is open. So a device's ETag
changes when its wave opens (its next check-in is a 200 and gets the offer) and for no
other device; no query per check-in, nothing scanned.

Only on a 200 does :func:`offer` touch the database: for a campaign whose wave the device
is in and that has no progress row for it yet, the device's ECU versions are checked
against the campaign's compatible list. Compatible: the release's targets are assigned to
its ECUs (what they had before is kept in the progress row, for a halt), its generation is
bumped, the wave's ``offered`` counter goes up by one and ``device.assign`` is audited, in
one transaction. Incompatible: a progress row says so and the campaign's ``incompatible``
count goes up; nothing is assigned, then or ever (unless the device later reports versions
that are compatible).

A device in flight in one campaign is not offered another's release until that one ends for
it (campaigns over the same ECUs never race for an assignment).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from otaguard.audit.entry import Actor, AuditEvent
from otaguard.rollout.cohort import WavePlan
from otaguard.rollout.counters import Stage
from otaguard.rollout.persist import state_from_dict
from otaguard.server.db import Database
from otaguard.server.models import (
    Assignment,
    Campaign,
    CampaignDevice,
    CampaignWave,
    Device,
    Ecu,
    EnrollmentGroup,
)
from otaguard.server.repo_store import TargetIndex
from otaguard.server.services import audit
from otaguard.server.services.campaign_select import (
    EcuVersion,
    GroupInfo,
    Selector,
    in_waves,
    incompatible_ecus,
    wave_of,
)
from otaguard.server.services.campaigns import ABANDON, REVERT

#: How long a process trusts its list of running campaigns (seconds): a start, an advance
#: or a halt reaches every process's check-ins within this.
CACHE_TTL = 2.0
IN_FLIGHT = (Stage.OFFERED.value, Stage.DOWNLOADING.value, Stage.INSTALLED.value)
#: progress rows that are not an offer
NOT_OFFERED = ("incompatible", "control")
STOPPED = ("halted", "cancelled")
#: campaigns whose release is offered: running, and completed ones for vehicles that missed it
OFFERING = ("running", "completed")
#: stages in which the campaign's target is (still) the device's assignment
ASSIGNED = (*IN_FLIGHT, Stage.CONFIRMED.value, Stage.SILENT.value)


@dataclass(frozen=True)
class Running:
    """What a check-in needs of one running campaign."""

    id: str
    key: bytes
    plan: WavePlan
    offering: int
    selector: Selector


@dataclass
class CampaignCache:
    db: Database
    ttl: float = CACHE_TTL
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _at: float = 0.0
    _running: tuple[Running, ...] = ()
    _groups: dict[int, GroupInfo] = field(default_factory=dict)

    def cached(self) -> tuple[bool, tuple[Running, ...], dict[int, GroupInfo]]:
        fresh = bool(self._at) and time.monotonic() - self._at < self.ttl
        return fresh, self._running, self._groups

    def refresh(self) -> tuple[tuple[Running, ...], dict[int, GroupInfo]]:
        """Read the running campaigns and the enrolment groups: two small reads."""
        with self._lock:
            fresh, running, groups = self.cached()
            if fresh:
                return running, groups
            now = time.monotonic()
            with self.db.reading() as session:
                rows = list(
                    session.scalars(
                        select(Campaign)
                        .where(Campaign.status.in_((*OFFERING, "paused")))
                        # creation order: the second is too coarse for "created after" (two
                        # campaigns made within one), the deployment row's id is not
                        .order_by(Campaign.created_at, Campaign.deployment_id)
                    )
                )
                found = []
                for row in _not_superseded(rows):
                    state = state_from_dict(row.state)
                    if state.offering is None:
                        continue
                    found.append(
                        Running(
                            row.id,
                            bytes.fromhex(row.cohort_key),
                            state.plan,
                            state.offering,
                            Selector.from_dict(row.selector),
                        )
                    )
                # small (one row per enrolment group); also gives the check-in's push topics
                # their hardware id without a query per answer
                groups = {
                    gid: GroupInfo(hw, region, dict(tags or {}))
                    for gid, hw, region, tags in session.execute(
                        select(
                            EnrollmentGroup.id,
                            EnrollmentGroup.hardware_id,
                            EnrollmentGroup.region,
                            EnrollmentGroup.tags,
                        )
                    )
                }
            self._running, self._groups, self._at = tuple(found), groups, now
            return self._running, self._groups

    def forget(self) -> None:
        self._at = 0.0


def _not_superseded(rows: Sequence[Campaign]) -> list[Campaign]:
    """``rows`` (oldest first) less the completed campaigns a later one covers.

    A completed campaign keeps offering its release to vehicles that missed it (see
    ``CampaignState.offering``) until a campaign created after it, running, paused or
    completed, is for a release of the same hardware: from then on that one speaks for the
    hardware, and late vehicles are not handed the older release first. A later campaign
    that was halted or cancelled does not count (its release was stopped, not replaced).
    """
    kept = []
    later: set[str] = set()
    for row in reversed(rows):
        hardware = set(row.hardware_ids or ())
        if row.status == "running" or not hardware & later:
            kept.append(row)
        later |= hardware
    return kept[::-1]


def eligible(
    running: Sequence[Running], groups: dict[int, GroupInfo], device_id: str, group_id: int
) -> list[Running]:
    """Running campaigns whose selector matches the device and whose open waves hold it."""
    group = groups.get(group_id)
    return [
        c
        for c in running
        if c.selector.matches(device_id, group)
        and in_waves(c.key, c.id, device_id, c.plan, c.offering)
    ]


def etag_part(campaigns: Sequence[Running]) -> str:
    return ",".join(c.id for c in campaigns)


def offer(
    db: Database,
    index: TargetIndex | None,
    campaigns: Sequence[Running],
    device_id: str,
    *,
    now: int,
) -> bool:
    """Offer each eligible campaign's release if not done yet; True when anything was
    assigned (the device's generation moved)."""
    if not campaigns or index is None:
        return False
    ids = [c.id for c in campaigns]
    with db.reading() as session:
        known = {
            cid: stage
            for cid, stage in session.execute(
                select(CampaignDevice.campaign_id, CampaignDevice.stage).where(
                    CampaignDevice.device_id == device_id, CampaignDevice.campaign_id.in_(ids)
                )
            )
        }
    todo = [c for c in campaigns if known.get(c.id) in (None, *NOT_OFFERED)]
    if not todo:
        return False
    assigned: list[AuditEvent] = []
    with db.writing() as session:
        for running in todo:
            event = _offer_one(session, index, running, device_id, now)
            if event is not None:
                assigned.append(event)
        if assigned:
            audit.record_all(session, assigned)  # last: it holds the log's head
    return bool(assigned)


def _offer_one(
    session: Session, index: TargetIndex, running: Running, device_id: str, now: int
) -> AuditEvent | None:
    """Offer one campaign's release; its ``device.assign`` event, None if not offered."""
    row = session.scalars(
        select(Campaign).where(Campaign.id == running.id).with_for_update()
    ).one_or_none()
    if row is None or row.status not in OFFERING:
        return None
    progress = session.get(CampaignDevice, {"campaign_id": row.id, "device_id": device_id})
    if progress is not None and progress.stage not in NOT_OFFERED:
        return None  # another process offered it a moment ago
    busy = session.scalar(
        select(CampaignDevice.campaign_id)
        .join(Campaign, Campaign.id == CampaignDevice.campaign_id)
        .where(
            CampaignDevice.device_id == device_id,
            CampaignDevice.campaign_id != row.id,
            CampaignDevice.stage.in_(IN_FLIGHT),
            Campaign.status.in_(("running", "paused", "completed")),
        )
        .limit(1)
    )
    if busy is not None:
        return None
    ecus = list(session.scalars(select(Ecu).where(Ecu.device_id == device_id)))
    per_hardware: dict[str, str] = {}
    for target in row.targets:
        info = index.targets.get(target)
        for hw in (info.custom.get("hardware_ids") or ()) if info is not None else ():
            per_hardware.setdefault(str(hw), target)
    wave = wave_of(running.key, row.id, device_id, running.plan)
    refused = incompatible_ecus(
        row.compatible,
        [EcuVersion(e.serial, e.hardware_id, e.version) for e in ecus],
        per_hardware,
    )
    updated = [e for e in ecus if e.hardware_id in per_hardware]
    if not updated:
        refused = refused or ["no ECU of a hardware id the release is for"]
    if refused:
        if progress is None:
            session.add(
                CampaignDevice(
                    campaign_id=row.id,
                    device_id=device_id,
                    wave=wave,
                    stage="incompatible",
                    failure=None,
                    offered_at=None,
                    updated_at=now,
                    previous={"refused": refused[:8]},
                    told_revert=False,
                    control_reported=False,
                    wave_reported=False,
                )
            )
            row.incompatible += 1
        elif progress.stage != "incompatible":
            progress.stage = "incompatible"
            progress.previous = {"refused": refused[:8]}
            progress.updated_at = now
            row.incompatible += 1
        return None
    previous: dict[str, Any] = {}
    for ecu in updated:
        key = {"device_id": device_id, "ecu_serial": ecu.serial}
        current = session.get(Assignment, key)
        previous[ecu.serial] = None if current is None else [current.target, current.deployment_id]
        session.merge(
            Assignment(
                device_id=device_id,
                ecu_serial=ecu.serial,
                target=per_hardware[ecu.hardware_id],
                deployment_id=row.deployment_id,
                assigned_at=now,
            )
        )
    if progress is None:
        progress = CampaignDevice(
            campaign_id=row.id,
            device_id=device_id,
            control_reported=False,
            wave_reported=False,
            told_revert=False,
        )
        session.add(progress)
    elif progress.stage == "incompatible":
        row.incompatible -= 1
    progress.wave = wave
    progress.stage = Stage.OFFERED.value
    progress.failure = None
    progress.offered_at = now
    progress.updated_at = now
    progress.previous = previous
    session.execute(
        update(CampaignWave)
        .where(CampaignWave.campaign_id == row.id, CampaignWave.wave == wave)
        .values(offered=CampaignWave.offered + 1)
    )
    session.execute(
        update(Device).where(Device.id == device_id).values(generation=Device.generation + 1)
    )
    session.flush()
    details = {
        "campaign": row.id,
        "wave": wave,
        "deployment": row.deployment_id,
        "target": row.targets[0],
        "ecus": sorted(previous),
    }
    actor = Actor("system", "campaign")
    return AuditEvent(audit.when(now), actor, "device.assign", device_id, details)


@dataclass(frozen=True)
class InFlight:
    campaign: dict[str, Any] | None
    actions: list[dict[str, str]]


def in_flight(db: Database, device_id: str) -> InFlight:
    """The campaign the device's answer is about, and what a stop tells it to do.

    ``campaign``: the newest campaign whose release the answer lists for the device (offered,
    in flight, confirmed, or silent: still assigned), or the stopped campaign whose actions
    the answer carries. A device that failed, abandoned or reverted has its previous
    assignment back: no campaign of that one.
    """
    with db.reading() as session:
        rows = session.execute(
            select(
                CampaignDevice.campaign_id,
                CampaignDevice.wave,
                CampaignDevice.stage,
                CampaignDevice.told_revert,
                Campaign.status,
            )
            .join(Campaign, Campaign.id == CampaignDevice.campaign_id)
            .where(
                CampaignDevice.device_id == device_id,
                CampaignDevice.stage.in_(ASSIGNED),
            )
            .order_by(CampaignDevice.offered_at.desc())
        ).all()
    campaign = None
    actions: list[dict[str, str]] = []
    for cid, wave, stage, told_revert, status in rows:
        if status in STOPPED:
            if stage in ABANDON:
                actions.append({"kind": "abandon", "campaign": cid})
            elif stage in REVERT and told_revert:
                actions.append({"kind": "revert", "campaign": cid})
            else:
                continue
        if campaign is None:
            campaign = {"id": cid, "wave": wave}
    return InFlight(campaign, actions)
