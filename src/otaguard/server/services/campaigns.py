"""Campaigns: create, approve, start, pause, resume, halt, cancel; status; what a stop does.

The campaign's state is :class:`otaguard.rollout.CampaignState`, moved only by
:func:`otaguard.rollout.step` (the two-person rule, which event is allowed in which state)
and stored with :func:`otaguard.rollout.state_to_dict` in ``campaigns.state``. Each
operator action is one transaction that locks the campaign's row, steps the state, stores
it and appends its audit entry (``campaign.<action>``: who, role, token, when) last, so the
action and its record commit together or not at all.

A stop (halt, by an operator or the evaluator, or cancel) takes effect in the same
transaction: every device the campaign has in flight and must leave it (offered or
downloading: abandon; in trial boot with ``halt.revert_on_halt``: revert) gets its previous
assignment back and its assignment generation bumped, so its next check-in is a 200 whose
director metadata lists what it had before, with the ``abandon``/``revert`` action. The
work is proportional to the devices in flight (at most the opened waves), done once.

Notices for the push side (``campaign_notice.Notice``) are returned to the caller, which
sends them after the commit.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from otaguard.audit.entry import Actor, AuditEvent
from otaguard.errors import (
    CampaignStateError,
    MalformedError,
    RolloutPolicyError,
    TwoPersonRuleError,
)
from otaguard.repo import compat
from otaguard.rollout import (
    DEFAULT,
    Approve,
    CampaignCounters,
    CampaignState,
    Cancel,
    CohortHasher,
    Decision,
    Halt,
    HealthTally,
    Pause,
    Policy,
    Resume,
    Start,
    Status,
    WaveCounters,
    create,
    parse_policy,
    state_from_dict,
    state_to_dict,
    step,
)
from otaguard.rollout.checks import plan_warnings
from otaguard.rollout.counters import Stage
from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import (
    Assignment,
    Campaign,
    CampaignDevice,
    CampaignHealth,
    CampaignWave,
    Deployment,
    Device,
    EnrollmentGroup,
)
from otaguard.server.repo_store import TargetIndex
from otaguard.server.services import audit
from otaguard.server.services.campaign_notice import Notice
from otaguard.server.services.campaign_select import GroupInfo, Selector

MAX_TARGETS = 16
MAX_COMPATIBLE = 64
#: stages a stop takes devices out of: told to abandon (offered, downloading, or silent:
#: where it is is unknown, and abandoning is the safe instruction) or revert (trial boot)
ABANDON = (Stage.OFFERED.value, Stage.DOWNLOADING.value, Stage.SILENT.value)
REVERT = (Stage.INSTALLED.value,)
#: the stage counters' columns, as WaveCounters names them
STAGE_COLUMNS = tuple(
    name
    for name in WaveCounters.__dataclass_fields__
    if name != "health"  # health sums live in campaign_health
)
CONTROL_WAVE = -1


def _num(value: float) -> str:
    """Audit entries hold no floats (one spelling per value): figures go in as text."""
    return f"{value:.6g}"


def plain(value: Any) -> Any:
    """``value`` with every float written as text, for an audit entry's details."""
    if isinstance(value, float):
        return _num(value) if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class CampaignInput:
    name: str
    targets: Sequence[str]
    selector: Selector
    compatible: Mapping[str, Sequence[str]]
    policy_toml: str | None = None


def _policy(text: str | None) -> Policy:
    if text is None:
        return DEFAULT
    try:
        return parse_policy(text)
    except RolloutPolicyError as exc:
        raise ApiError(422, "invalid-policy", str(exc)) from None


def _groups(session: Session) -> dict[int, GroupInfo]:
    rows = session.execute(
        select(
            EnrollmentGroup.id,
            EnrollmentGroup.hardware_id,
            EnrollmentGroup.region,
            EnrollmentGroup.tags,
        )
    )
    return {gid: GroupInfo(hw, region, dict(tags or {})) for gid, hw, region, tags in rows}


#: Up to this many selected devices, creation reads their ids and sizes the waves exactly
#: (``plan_waves`` with buckets: about a second for the largest). Above it the hash's
#: binomial spread around a wave's plan is a small share of any wave a policy would use.
EXACT_PLAN_LIMIT = 500_000


def _selected(session: Session, selector: Selector, columns: Any) -> Any:
    groups = [gid for gid, info in _groups(session).items() if selector.matches_group(info)]
    query = (
        select(columns)
        .select_from(Device)
        .where(Device.group_id.in_(groups), Device.revoked_at.is_(None))
    )
    if selector.devices:
        query = query.where(Device.id.in_(sorted(set(selector.devices))))
    return query


def population(session: Session, selector: Selector) -> int:
    """Live devices the selector matches now (the plan's population, fixed at creation)."""
    return int(session.scalar(_selected(session, selector, func.count())) or 0)


def selection_buckets(
    session: Session, selector: Selector, key: bytes, campaign_id: str
) -> list[int]:
    """The cohort bucket of every live device the selector matches now."""
    ids = session.scalars(_selected(session, selector, Device.id)).all()
    return CohortHasher(key, campaign_id).buckets(ids)


def _hardware_ids(index: TargetIndex | None, targets: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for target in targets:
        info = index.targets.get(target) if index is not None else None
        if info is None:
            raise ApiError(422, "unknown-target", f"{target!r} is not in the published repository")
        if info.custom.get("payload_kind") == "delta":
            raise ApiError(422, "invalid-request", f"{target} is a delta: name the full image")
        out.update(str(h) for h in info.custom.get("hardware_ids") or ())
    return out


def _declared(index: TargetIndex | None, targets: Sequence[str]) -> dict[str, set[str]]:
    """Per hardware id, the versions the release's targets may replace (their own signed
    declaration, ``repo add-target --compatible-with``); none declared: absent."""
    out: dict[str, set[str]] = {}
    for target in targets:
        info = index.targets.get(target) if index is not None else None
        if info is None:
            continue
        try:
            allowed = compat.declared(info)
        except MalformedError as exc:
            raise ApiError(422, "invalid-request", str(exc)) from None
        if allowed is None:
            continue
        for hw in info.custom.get("hardware_ids") or ():
            key = str(hw)
            out[key] = out[key] & allowed if key in out else set(allowed)
    return out


def compatible_versions(
    declared: Mapping[str, set[str]], given: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """The campaign's compatible versions: the release's declaration, narrowed (never
    widened) by the operator's; the operator's alone where the release declares nothing
    (ECUs the release does not update, or a release without a declaration)."""
    out = {k: sorted(set(v)) for k, v in given.items() if v}
    for hw, allowed in declared.items():
        if hw not in out:
            out[hw] = sorted(allowed)
            continue
        wider = sorted(set(out[hw]) - allowed)
        if wider:
            raise ApiError(
                422,
                "invalid-request",
                f"the release does not declare {hw} {', '.join(wider[:5])} compatible "
                f"(it may replace {', '.join(sorted(allowed)[:5])})",
            )
    if not out:
        raise ApiError(
            422,
            "invalid-request",
            "declare the ECU versions the release may be installed over (compatible): the "
            "release declares none (repo add-target --compatible-with)",
        )
    return out


def create_campaign(
    db: Database, index: TargetIndex | None, spec: CampaignInput, *, by: Operator, now: int
) -> dict[str, Any]:
    """A draft campaign; its waves are planned over the devices the selector matches now."""
    policy = _policy(spec.policy_toml)
    targets = list(dict.fromkeys(spec.targets))
    if not 1 <= len(targets) <= MAX_TARGETS:
        raise ApiError(422, "invalid-request", f"name 1 to {MAX_TARGETS} release targets")
    hardware = _hardware_ids(index, targets)
    if spec.selector.empty:
        raise ApiError(422, "invalid-request", "the selector must name something to select")
    compatible = compatible_versions(_declared(index, targets), spec.compatible)
    if len(compatible) > MAX_COMPATIBLE:
        raise ApiError(422, "invalid-request", f"at most {MAX_COMPATIBLE} compatible ECUs")
    campaign_id = "c-" + secrets.token_hex(6)
    with db.writing() as session:
        cohort_key = secrets.token_bytes(32)
        count = population(session, spec.selector)
        buckets = None
        if count <= EXACT_PLAN_LIMIT:
            buckets = selection_buckets(session, spec.selector, cohort_key, campaign_id)
            count = len(buckets)  # the count is not locked: a device may enrol in between
        if count < 1:
            raise ApiError(422, "invalid-request", "the selector matches no enrolled device")
        try:
            state = create(campaign_id, policy, count, by=by.name, now=float(now), buckets=buckets)
        except CampaignStateError as exc:
            raise ApiError(422, "invalid-request", str(exc)) from None
        deployment = Deployment(
            target=targets[0], group_name=None, created_by=by.name, created_at=now
        )
        session.add(deployment)
        session.flush()
        row = Campaign(
            id=campaign_id,
            name=spec.name,
            targets=targets,
            hardware_ids=sorted(hardware),
            selector=spec.selector.to_dict(),
            compatible=compatible,
            policy=policy.to_dict(),
            state=state_to_dict(state),
            status=state.status.value,
            wave=state.wave,
            cohort_key=cohort_key.hex(),
            population=count,
            incompatible=0,
            deployment_id=deployment.id,
            created_by=by.name,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.add_all(
            CampaignWave(campaign_id=campaign_id, wave=w, **dict.fromkeys(STAGE_COLUMNS, 0))
            for w in range(state.plan.waves)
        )
        session.flush()
        details = {
            "campaign": campaign_id,
            "name": spec.name,
            "target": targets[0],
            "targets": targets,
            "hardware_ids": sorted(hardware)[:50],
            "selector": spec.selector.to_dict(),
            "compatible": compatible,
            "population": count,
            "waves": list(state.plan.cumulative),
            "policy": policy.to_toml(),
        }
        _record(session, by, "campaign.create", campaign_id, details, now)
        return status_of(session, row, state)


def _record(
    session: Session, by: Operator | None, action: str, subject: str, details: Any, now: int
) -> None:
    actor, extra = audit.actor_and_details(by, plain(details))
    audit.record_all(session, [AuditEvent(audit.when(now), actor, action, subject, extra)])


def _locked(session: Session, campaign_id: str) -> Campaign:
    row = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise ApiError(404, "not-found", f"no campaign {campaign_id!r}")
    return row


def load_state(row: Campaign) -> CampaignState:
    return state_from_dict(row.state)


def store_state(row: Campaign, state: CampaignState, now: int) -> None:
    row.state = state_to_dict(state)
    row.status = state.status.value
    row.wave = state.wave
    row.updated_at = now


_EVENTS = {
    "approve": (Approve, "campaign.approve"),
    "start": (Start, "campaign.start"),
    "pause": (Pause, "campaign.pause"),
    "resume": (Resume, "campaign.resume"),
    "cancel": (Cancel, "campaign.cancel"),
}


def notice_for(row: Campaign, reason: str) -> Notice:
    selector = Selector.from_dict(row.selector)
    hardware = (selector.hardware_id,) if selector.hardware_id else tuple(row.hardware_ids)
    return Notice(row.id, reason, hardware, selector.devices)


def act(
    db: Database,
    campaign_id: str,
    action: str,
    *,
    by: Operator,
    now: int,
    reason: str | None = None,
) -> tuple[dict[str, Any], Notice | None]:
    """An operator's event (``approve``, ``start``, ``pause``, ``resume``, ``cancel``,
    ``halt``: the manual kill switch) in one transaction with its audit entry."""
    with db.writing() as session:
        row = _locked(session, campaign_id)
        state = load_state(row)
        if action == "halt":
            event: Any = Halt(by.name, reason or "manual halt")
            audit_action = "campaign.kill"
        else:
            kind, audit_action = _EVENTS[action]
            event = kind(by.name)
        try:
            new, decision = step(state, event, float(now))
        except TwoPersonRuleError as exc:
            raise ApiError(403, "two-person-rule", str(exc)) from None
        except CampaignStateError as exc:
            raise ApiError(409, "campaign-state", str(exc)) from None
        store_state(row, new, now)
        stopped = stop_effects(session, row, new, now) if new.status.final else {}
        details = {
            "campaign": row.id,
            "target": row.targets[0],
            "status": new.status.value,
            "wave": new.wave,
            "reason": decision.reason,
            **stopped,
        }
        if action == "approve":
            details["created_by"] = state.created.by
        session.flush()
        _record(session, by, audit_action, row.id, details, now)
        result = status_of(session, row, new)
    return result, (None if action == "approve" else notice_for(row, action))


def stop_effects(session: Session, row: Campaign, state: CampaignState, now: int) -> dict[str, int]:
    """What a halt or cancel does to the devices in flight (see the module docstring)."""
    if state.status is Status.COMPLETED:
        return {}
    stages = list(ABANDON)
    revert = state.policy.halt.revert_on_halt
    if revert:
        stages.extend(REVERT)
    rows = list(
        session.scalars(
            select(CampaignDevice).where(
                CampaignDevice.campaign_id == row.id, CampaignDevice.stage.in_(stages)
            )
        )
    )
    abandon = reverted = 0
    for progress in rows:
        restore_assignment(session, progress, row.deployment_id)
        if progress.stage in REVERT:
            progress.told_revert = True
            reverted += 1
        else:
            abandon += 1
        progress.updated_at = now
    if rows:
        session.execute(
            update(Device)
            .where(Device.id.in_([p.device_id for p in rows]))
            .values(generation=Device.generation + 1)
        )
    return {"told_to_abandon": abandon, "told_to_revert": reverted}


def restore_assignment(session: Session, progress: CampaignDevice, deployment_id: int) -> None:
    """Give the device back what it was assigned before the campaign (per ECU)."""
    for serial, before in (progress.previous or {}).items():
        key = {"device_id": progress.device_id, "ecu_serial": serial}
        current = session.get(Assignment, key)
        if current is None or current.deployment_id != deployment_id:
            continue  # assigned again since, by someone else: leave it
        if before is None:
            session.execute(
                delete(Assignment).where(
                    Assignment.device_id == progress.device_id, Assignment.ecu_serial == serial
                )
            )
        else:
            current.target, current.deployment_id = before[0], before[1]


# -- reading -------------------------------------------------------------------------------


def counters(session: Session, campaign_id: str, waves: int) -> CampaignCounters:
    """The evaluator's input: every wave's stage counters and health sums, and control's."""
    stages: dict[int, WaveCounters] = {}
    for wave_row in session.scalars(
        select(CampaignWave).where(CampaignWave.campaign_id == campaign_id)
    ):
        values = {name: getattr(wave_row, name) for name in STAGE_COLUMNS}
        stages[wave_row.wave] = WaveCounters(**values)
    health: dict[int, dict[str, Any]] = {}
    for h in session.scalars(
        select(CampaignHealth).where(CampaignHealth.campaign_id == campaign_id)
    ):
        sums = health.setdefault(
            h.wave, {"devices": 0, "exposure_s": 0.0, "counts": {}, "flags": {}, "metrics": {}}
        )
        if h.kind == "total":
            sums["devices"], sums["exposure_s"] = int(h.n), float(h.total)
        elif h.kind == "count":
            sums["counts"][h.name] = int(h.n)
        elif h.kind == "flag":
            sums["flags"][h.name] = (int(h.n), int(h.m))
        elif h.kind == "metric":
            sums["metrics"][h.name] = (int(h.n), float(h.total), float(h.squares))

    def tally(wave: int) -> HealthTally:
        sums = health.get(wave)
        return HealthTally() if sums is None else HealthTally(**sums)

    out = [
        WaveCounters(**{**_fields(stages.get(wave, WaveCounters())), "health": tally(wave)})
        for wave in range(waves)
    ]
    return CampaignCounters(tuple(out), tally(CONTROL_WAVE))


def _fields(counters: WaveCounters) -> dict[str, Any]:
    return {name: getattr(counters, name) for name in STAGE_COLUMNS}


def status_of(session: Session, row: Campaign, state: CampaignState) -> dict[str, Any]:
    snapshot = counters(session, row.id, state.plan.waves)
    incompatible = list(
        session.scalars(
            select(CampaignDevice.device_id)
            .where(CampaignDevice.campaign_id == row.id, CampaignDevice.stage == "incompatible")
            .order_by(CampaignDevice.device_id)
            .limit(100)
        )
    )

    def stamp(value: Any) -> dict[str, Any] | None:
        return None if value is None else {"by": value.by, "at": value.at}

    return {
        "id": row.id,
        "name": row.name,
        "targets": list(row.targets),
        "selector": dict(row.selector),
        "compatible": dict(row.compatible),
        "status": state.status.value,
        "wave": state.wave,
        "offering": state.offering,
        "end_reason": state.end_reason,
        "population": row.population,
        "plan": list(state.plan.cumulative),
        "created": stamp(state.created),
        "approved": stamp(state.approved),
        "started": stamp(state.started),
        "paused": stamp(state.paused),
        "resumed": stamp(state.resumed),
        "ended": stamp(state.ended),
        "waves": [
            {**w.to_dict(), "wave": i, "failures": w.failures, "total": w.total}
            for i, w in enumerate(snapshot.waves)
        ],
        "control_health_devices": snapshot.control.devices,
        "incompatible": row.incompatible,
        "incompatible_devices": incompatible,
        "policy": state.policy.to_toml(),
        "warnings": plan_warnings(state.policy, state.plan.cumulative),
    }


def show(db: Database, campaign_id: str) -> dict[str, Any]:
    with db.reading() as session:
        row = session.get(Campaign, campaign_id)
        if row is None:
            raise ApiError(404, "not-found", f"no campaign {campaign_id!r}")
        return status_of(session, row, load_state(row))


def list_campaigns(db: Database) -> list[dict[str, Any]]:
    with db.reading() as session:
        rows = session.scalars(
            select(Campaign).order_by(Campaign.created_at, Campaign.deployment_id)
        )
        return [
            {
                "id": r.id,
                "name": r.name,
                "targets": list(r.targets),
                "status": r.status,
                "wave": r.wave,
                "population": r.population,
                "created_by": r.created_by,
                "created_at": r.created_at,
            }
            for r in rows
        ]


def decision_details(row: Campaign, decision: Decision) -> dict[str, Any]:
    return {"campaign": row.id, "target": row.targets[0], **decision.to_dict()}


EVALUATOR_ACTOR = Actor("system", "evaluator")
