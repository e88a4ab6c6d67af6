"""Campaign telemetry: device events move a device's stage, health reports fill the tallies.

Events (``POST /device/events``) carrying ``"campaign"`` move the device's progress row and
the wave's stage counters by one (``SET downloading = downloading - 1, installed =
installed + 1``), in the transaction that stores the events. Only events new to the server
move anything (the events table is idempotent by id, so a replay moves nothing), and only a
real move: a stage never goes backwards, a final stage (confirmed, failed, abandoned,
reverted) never changes, a silent device's late report moves it out of ``silent``. A device
that reports its install after a halt (it was downloading when told to abandon, or its reports
came late) is told to revert like those in trial at the halt, when the policy says
``revert_on_halt``. A move
to failed ends the offer for that device: it gets its previous assignment back (and a new
generation), so a release that failed deterministically is not tried again. Kinds
(docs/server.md, "Device API"):

=====================================  ==============================================
download-started                       downloading
downloaded                             (no move)
installed, boot-trial                  installed (in trial boot)
confirmed                              confirmed
reverted                               failed (boot), or reverted when told to revert
download-/install-failed, transient    a retry (counted, not a failure)
download-failed, deterministic         failed (verification)
install-failed, deterministic          failed (install)
refused                                failed (verification)
abandoned                              abandoned
incompatible                           failed (incompatible)
=====================================  ==============================================

Health (``POST /device/health``) goes, per running or paused campaign whose selector holds
the device, to its wave's tally when the device confirmed the campaign's release, to the
campaign's control tally when it has not installed it, nowhere while it is in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from otaguard.rollout.counters import FailureClass, Stage
from otaguard.rollout.persist import state_from_dict
from otaguard.server.models import (
    Campaign,
    CampaignDevice,
    CampaignHealth,
    CampaignWave,
    Device,
    EnrollmentGroup,
)
from otaguard.server.services.campaign_select import GroupInfo, Selector, wave_of
from otaguard.server.services.campaigns import CONTROL_WAVE, restore_assignment

_RANK = {Stage.OFFERED: 0, Stage.DOWNLOADING: 1, Stage.INSTALLED: 2}
_FINAL = {Stage.CONFIRMED, Stage.FAILED, Stage.ABANDONED, Stage.REVERTED}
STOPPED = ("halted", "cancelled")
RETRY = "retry"


def _column(stage: Stage, failure: FailureClass | None) -> str:
    return f"failed_{failure.value}" if stage is Stage.FAILED and failure else stage.value


def target_of(
    event: Mapping[str, Any], told_revert: bool
) -> tuple[Stage, FailureClass | None] | str | None:
    """The stage an event moves its device to, ``RETRY``, or None (no move)."""
    kind, failure = event.get("kind"), event.get("failure")
    if kind == "download-started":
        return Stage.DOWNLOADING, None
    if kind in ("installed", "boot-trial"):
        return Stage.INSTALLED, None
    if kind == "confirmed":
        return Stage.CONFIRMED, None
    if kind == "reverted":
        return (Stage.REVERTED, None) if told_revert else (Stage.FAILED, FailureClass.BOOT)
    if kind in ("download-failed", "install-failed"):
        if failure == "transient":
            return RETRY
        if kind == "download-failed":
            return Stage.FAILED, FailureClass.VERIFICATION
        return Stage.FAILED, FailureClass.INSTALL
    if kind == "refused":
        return Stage.FAILED, FailureClass.VERIFICATION
    if kind == "abandoned":
        return Stage.ABANDONED, None
    if kind == "incompatible":
        return Stage.FAILED, FailureClass.INCOMPATIBLE
    return None


def moves(current: Stage, target: Stage) -> bool:
    """Whether a report of ``target`` moves a device that is in ``current``."""
    if current in _FINAL or current is target:
        return False
    if current is Stage.SILENT:
        return target is not Stage.OFFERED
    if target in _RANK:
        return _RANK[target] > _RANK[current]
    return True


def apply_events(
    session: Session, device_id: str, events: Iterable[Mapping[str, Any]], now: int
) -> int:
    """Move the device's stage for each new event that names a campaign; the moves made."""
    moved = 0
    for event in events:
        campaign_id = event.get("campaign")
        if not campaign_id:
            continue
        progress = session.scalars(
            select(CampaignDevice)
            .where(CampaignDevice.campaign_id == campaign_id, CampaignDevice.device_id == device_id)
            .with_for_update()
        ).one_or_none()
        if progress is None or progress.stage in ("incompatible", "control"):
            continue  # never offered: nothing of the campaign's to move
        target = target_of(event, progress.told_revert)
        current = Stage(progress.stage)
        waves = update(CampaignWave).where(
            CampaignWave.campaign_id == campaign_id, CampaignWave.wave == progress.wave
        )
        if target == RETRY:
            if current not in _FINAL:
                session.execute(waves.values(retries=CampaignWave.retries + 1))
            continue
        if not isinstance(target, tuple) or not moves(current, target[0]):
            continue
        stage, failure = target
        before = _column(current, None)
        after = _column(stage, failure)
        session.execute(
            waves.values(
                {
                    before: getattr(CampaignWave, before) - 1,
                    after: getattr(CampaignWave, after) + 1,
                }
            )
        )
        progress.stage = stage.value
        progress.failure = None if failure is None else failure.value
        progress.updated_at = now
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None  # the progress row's foreign key
        if stage is Stage.INSTALLED and campaign.status in STOPPED and not progress.told_revert:
            # installed after the stop told it to abandon (the download had finished, or the
            # report came late): it is now what the halt's revert is for, if the policy says so
            progress.told_revert = state_from_dict(campaign.state).policy.halt.revert_on_halt
        ended = stage is Stage.FAILED and campaign.status not in STOPPED
        if ended:
            # a deterministic failure ends the offer for this device: it gets its previous
            # assignment back, so the same failing release is not tried again
            restore_assignment(session, progress, campaign.deployment_id)
        if ended or campaign.status in STOPPED:
            # the answer's campaign and actions change for this device: a new ETag
            session.execute(
                update(Device)
                .where(Device.id == device_id)
                .values(generation=Device.generation + 1)
            )
        moved += 1
    return moved


# -- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    campaign: str | None
    window_s: float
    counts: Mapping[str, int]
    flags: Mapping[str, bool]
    metrics: Mapping[str, float]


#: stages that count as "not updated" (control) and "updated" (treated)
_CONTROL = (None, "control", "incompatible", "offered", "downloading", "abandoned")
_TREATED = ("confirmed",)


def record_health(session: Session, device_id: str, group_id: int, report: Health, now: int) -> int:
    """Add the report to each concerned campaign's wave or control tally; how many."""
    query = select(Campaign).where(Campaign.status.in_(("running", "paused")))
    if report.campaign is not None:
        query = query.where(Campaign.id == report.campaign)
    campaigns = list(session.scalars(query))
    if not campaigns:
        return 0
    group_row = session.get(EnrollmentGroup, group_id)
    group = (
        None
        if group_row is None
        else GroupInfo(group_row.hardware_id, group_row.region, dict(group_row.tags or {}))
    )
    added = 0
    for row in campaigns:
        if not Selector.from_dict(row.selector).matches(device_id, group):
            continue
        progress = session.scalars(
            select(CampaignDevice)
            .where(CampaignDevice.campaign_id == row.id, CampaignDevice.device_id == device_id)
            .with_for_update()
        ).one_or_none()
        stage = None if progress is None else progress.stage
        if stage in _TREATED and progress is not None:
            wave, first = progress.wave, not progress.wave_reported
            progress.wave_reported = True
        elif stage in _CONTROL:
            if progress is None:
                plan = state_from_dict(row.state).plan
                progress = CampaignDevice(
                    campaign_id=row.id,
                    device_id=device_id,
                    wave=wave_of(bytes.fromhex(row.cohort_key), row.id, device_id, plan),
                    stage="control",
                    failure=None,
                    offered_at=None,
                    updated_at=now,
                    previous=None,
                    told_revert=False,
                    control_reported=False,
                    wave_reported=False,
                )
                session.add(progress)
            wave, first = CONTROL_WAVE, not progress.control_reported
            progress.control_reported = True
        else:
            continue  # in between: installed, in trial, failed, silent
        _add(session, row.id, wave, report, first)
        added += 1
    return added


def _add(session: Session, campaign_id: str, wave: int, report: Health, first: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "kind": "total",
            "name": "",
            "n": int(first),
            "m": 0,
            "total": report.window_s,
            "squares": 0.0,
        }
    ]
    for name, value in report.counts.items():
        rows.append(
            {"kind": "count", "name": name, "n": value, "m": 0, "total": 0.0, "squares": 0.0}
        )
    for name, flagged in report.flags.items():
        rows.append(
            {"kind": "flag", "name": name, "n": int(flagged), "m": 1, "total": 0.0, "squares": 0.0}
        )
    for name, x in report.metrics.items():
        rows.append({"kind": "metric", "name": name, "n": 1, "m": 0, "total": x, "squares": x * x})
    _upsert(session, [{"campaign_id": campaign_id, "wave": wave, **r} for r in rows])


def _upsert(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """``n = n + excluded.n`` and so on: one statement per measure, no read first."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    for row in rows:
        statement = insert(CampaignHealth).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["campaign_id", "wave", "kind", "name"],
            set_={
                "n": CampaignHealth.n + statement.excluded.n,
                "m": CampaignHealth.m + statement.excluded.m,
                "total": CampaignHealth.total + statement.excluded.total,
                "squares": CampaignHealth.squares + statement.excluded.squares,
            },
        )
        session.execute(statement)
