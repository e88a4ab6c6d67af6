"""A campaign's state as plain JSON-ready data, and back (what the server stores per campaign).

The wave plan is stored as it was computed at creation, not recomputed on load, so a later
change to the planning code cannot move a running campaign's devices between waves. Loading
checks every field's type and the plan's shape and raises :class:`CampaignStateError` on
anything else: a damaged row must stop the campaign's evaluation, not be guessed at.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from otaguard.errors import CampaignStateError, RolloutPolicyError
from otaguard.rollout.cohort import BUCKET_SPACE, WavePlan
from otaguard.rollout.evaluator import CampaignState, Stamp, Status
from otaguard.rollout.policy import policy_from_mapping

_STAMPS = ("created", "approved", "started", "paused", "resumed", "ended")


def state_to_dict(state: CampaignState) -> dict[str, Any]:
    def stamp(value: Stamp | None) -> dict[str, Any] | None:
        return None if value is None else {"by": value.by, "at": value.at}

    out: dict[str, Any] = {
        "campaign_id": state.campaign_id,
        "policy": state.policy.to_dict(),
        "plan": {
            "population": state.plan.population,
            "cumulative": list(state.plan.cumulative),
            "thresholds": list(state.plan.thresholds),
        },
        "status": state.status.value,
        "end_reason": state.end_reason,
        "wave": state.wave,
        "wave_opened_at": state.wave_opened_at,
        "soaked_s": state.soaked_s,
        "running_since": state.running_since,
    }
    for name in _STAMPS:
        out[name] = stamp(getattr(state, name))
    return out


def _bad(what: str) -> CampaignStateError:
    return CampaignStateError(f"stored campaign state: {what}")


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{key} must be an integer")
    return value


def _float(data: Mapping[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{key} must be a number")
    return float(value)


def _text(data: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} must be text")
    return value


def _plan(data: object) -> WavePlan:
    if not isinstance(data, Mapping):
        raise _bad("plan must be an object")
    population = _int(data, "population")
    cumulative, thresholds = data.get("cumulative"), data.get("thresholds")
    if not (isinstance(cumulative, list) and isinstance(thresholds, list)):
        raise _bad("plan needs cumulative and thresholds lists")
    if not cumulative or len(cumulative) != len(thresholds):
        raise _bad("plan lists are empty or of different lengths")
    for values, top in ((cumulative, population), (thresholds, BUCKET_SPACE)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise _bad("plan lists must hold integers")
        if any(b <= a for a, b in itertools.pairwise(values)) or values[0] < 1:
            raise _bad("plan lists must increase from 1")
        if values[-1] != top:
            raise _bad("the plan's last wave must cover the whole selection")
    return WavePlan(population, tuple(cumulative), tuple(thresholds))


def state_from_dict(data: Mapping[str, Any]) -> CampaignState:
    try:
        policy = policy_from_mapping(data.get("policy") or {})
    except RolloutPolicyError as exc:
        raise _bad(str(exc)) from None
    try:
        status = Status(data.get("status"))
    except ValueError:
        raise _bad(f"unknown status {data.get('status')!r}") from None
    stamps: dict[str, Stamp | None] = {}
    for name in _STAMPS:
        value = data.get(name)
        if value is None and name != "created":
            stamps[name] = None
            continue
        if not isinstance(value, Mapping):
            raise _bad(f"{name} must be an object with by and at")
        by, at = _text(value, "by"), _float(value, "at")
        assert by is not None and at is not None
        stamps[name] = Stamp(by, at)
    plan = _plan(data.get("plan"))
    wave = _int(data, "wave")
    if not 0 <= wave < plan.waves:
        raise _bad(f"wave {wave} is not in the plan's {plan.waves} waves")
    soaked = _float(data, "soaked_s")
    campaign_id = _text(data, "campaign_id")
    created = stamps.pop("created")
    assert soaked is not None and campaign_id is not None and created is not None
    return CampaignState(
        campaign_id=campaign_id,
        policy=policy,
        plan=plan,
        status=status,
        created=created,
        end_reason=_text(data, "end_reason", optional=True),
        wave=wave,
        wave_opened_at=_float(data, "wave_opened_at", optional=True),
        soaked_s=soaked,
        running_since=_float(data, "running_since", optional=True),
        **stamps,
    )
