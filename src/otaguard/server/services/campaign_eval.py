"""The campaign evaluator's tick: silent devices, the counters, ``rollout.step``, the decision.

Run by the background jobs (``jobs.py``) of the one process holding the jobs lease, every
``Timing.job_interval`` seconds; tests call :func:`tick` directly with an explicit ``now``.
For each running or paused campaign, one transaction (the campaign's row locked):

1. devices offered more than ``halt.deadline_s`` ago and still in flight are moved to
   ``silent`` (counted as failures; a later report moves them out again): an index range
   scan of the in-flight devices past the deadline, at most :data:`SWEEP_LIMIT` per tick;
2. the counters snapshot: one row per wave and a few health rows, whatever the fleet size;
3. :func:`otaguard.rollout.step` with a ``Tick``; the new state is stored;
4. a decision other than "nothing" is appended to the audit log in the same transaction:
   ``killswitch.decision`` with the figures it rests on (advance or halt), then
   ``campaign.halt`` (with what the stop did to devices in flight) or
   ``campaign.complete``.

Lock order, as a device's report takes them: device rows before the wave's counter row
(the sweep's counter moves are applied in memory for the decision and written last), the
audit log's head at the very end; so a tick and a report never wait on each other in a
cycle.

The notices (advance, halt) are returned for the caller to send after the commit.
A tick repeated by a holder that lost its lease meanwhile only re-reads the same counters
and steps a state already stepped: the state machine is deterministic in its inputs.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from otaguard.audit.entry import AuditEvent
from otaguard.rollout import Action, CampaignCounters, Decision, Tick, Transition, step
from otaguard.rollout.counters import Stage
from otaguard.server.db import Database
from otaguard.server.models import Campaign, CampaignDevice, CampaignWave
from otaguard.server.services import audit
from otaguard.server.services.campaign_notice import Notice
from otaguard.server.services.campaigns import (
    EVALUATOR_ACTOR,
    counters,
    decision_details,
    load_state,
    notice_for,
    plain,
    stop_effects,
    store_state,
)

log = logging.getLogger("otaguard.server")
SWEEP_LIMIT = 10_000
_IN_FLIGHT = (Stage.OFFERED.value, Stage.DOWNLOADING.value, Stage.INSTALLED.value)


@dataclass(frozen=True)
class Ticked:
    campaign_id: str
    decision: Decision
    silent: int


def tick(db: Database, now: float) -> tuple[list[Ticked], list[Notice]]:
    """One evaluation of every running or paused campaign."""
    with db.reading() as session:
        ids = list(
            session.scalars(
                select(Campaign.id)
                .where(Campaign.status.in_(("running", "paused")))
                .order_by(Campaign.id)
            )
        )
    done: list[Ticked] = []
    notices: list[Notice] = []
    for campaign_id in ids:
        try:
            with db.writing() as session:
                result = _one(session, campaign_id, now)
        except Exception:
            # one damaged campaign (a state that no longer loads) must not stop the others,
            # nor the jobs after this one; it is retried next tick and logged each time
            log.exception("campaign %s: evaluation failed", campaign_id)
            continue
        if result is not None:
            done.append(result[0])
            if result[1] is not None:
                notices.append(result[1])
    return done, notices


def sweep_silent(
    session: Session, row: Campaign, deadline_s: float, now: float
) -> Counter[tuple[int, str]]:
    """In-flight devices offered before ``now - deadline_s`` become silent (failures); the
    moves per (wave, stage left), for the counters (:func:`count_silent`)."""
    cutoff = int(now - deadline_s)
    late = session.execute(
        select(CampaignDevice.device_id, CampaignDevice.wave, CampaignDevice.stage)
        .where(
            CampaignDevice.campaign_id == row.id,
            CampaignDevice.stage.in_(_IN_FLIGHT),
            CampaignDevice.offered_at < cutoff,
        )
        .limit(SWEEP_LIMIT)
        .with_for_update()
    ).all()
    if not late:
        return Counter()
    session.execute(
        update(CampaignDevice)
        .where(
            CampaignDevice.campaign_id == row.id,
            CampaignDevice.device_id.in_([d for d, _, _ in late]),
            CampaignDevice.stage.in_(_IN_FLIGHT),
        )
        .values(stage=Stage.SILENT.value, updated_at=int(now))
    )
    return Counter((wave, stage) for _, wave, stage in late)


def count_silent(session: Session, campaign_id: str, moves: Counter[tuple[int, str]]) -> None:
    """The sweep's moves in the wave counters. Done last in the tick (after a stop's
    device rows): the same lock order as a device's report (its row, then the wave's)."""
    for (wave, stage), count in sorted(moves.items()):
        column = getattr(CampaignWave, stage)
        session.execute(
            update(CampaignWave)
            .where(CampaignWave.campaign_id == campaign_id, CampaignWave.wave == wave)
            .values({stage: column - count, "silent": CampaignWave.silent + count})
        )


def _with_silent(snapshot: CampaignCounters, moves: Counter[tuple[int, str]]) -> CampaignCounters:
    waves = list(snapshot.waves)
    for (wave, stage), count in moves.items():
        waves[wave] = waves[wave].add(Transition(Stage(stage), Stage.SILENT), count)
    return CampaignCounters(tuple(waves), snapshot.control)


def _one(session: Session, campaign_id: str, now: float) -> tuple[Ticked, Notice | None] | None:
    row = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).one_or_none()
    if row is None or row.status not in ("running", "paused"):
        return None
    state = load_state(row)
    moves = sweep_silent(session, row, state.policy.halt.deadline_s, now)
    snapshot = _with_silent(counters(session, row.id, state.plan.waves), moves)
    new, decision = step(state, Tick(snapshot), now)
    store_state(row, new, int(now))
    notice = None
    events = []
    if decision.action is not Action.NONE:
        details = decision_details(row, decision)
        events.append(_event(now, "killswitch.decision", row.id, details))
        if decision.action is Action.HALT:
            stopped = stop_effects(session, row, new, int(now))
            events.append(_event(now, "campaign.halt", row.id, {**details, **stopped}))
            notice = notice_for(row, "halt")
        elif decision.action is Action.COMPLETE:
            events.append(_event(now, "campaign.complete", row.id, details))
        else:
            notice = notice_for(row, "advance")
    count_silent(session, row.id, moves)
    if events:
        session.flush()
        audit.record_all(session, events)  # last: it holds the log's head
    return Ticked(row.id, decision, sum(moves.values())), notice


def _event(now: float, action: str, subject: str, details: dict[str, object]) -> AuditEvent:
    return AuditEvent(audit.when(int(now)), EVALUATOR_ACTOR, action, subject, plain(details))
