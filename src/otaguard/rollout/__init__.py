"""Staged rollout as pure code: policy, cohorts, statistics and the campaign evaluator.

No database, no network, no clock, no third-party package: the fleet server keeps per-wave
counters incrementally and calls :func:`step` once per tick with the campaign's state, the
counters and ``now``; it stores the returned state and logs the decision with its figures.
``otaguard sim`` drives the same functions over a simulated fleet. See docs/rollout.md.

* :mod:`~otaguard.rollout.policy` -- the TOML policy and :data:`DEFAULT`;
* :mod:`~otaguard.rollout.cohort` -- keyed-hash buckets and the wave plan;
* :mod:`~otaguard.rollout.stats` -- Wilson bounds, Wald's SPRT, health-vs-control tests;
* :mod:`~otaguard.rollout.counters` -- stages, reports, per-wave counters, health tallies;
* :mod:`~otaguard.rollout.checks` -- the halt, advance and health tests and their figures;
* :mod:`~otaguard.rollout.evaluator` -- the state machine;
* :mod:`~otaguard.rollout.persist` -- the state as JSON-ready data.
"""

from __future__ import annotations

from otaguard.rollout.checks import FailureFigures, HealthFigures
from otaguard.rollout.cohort import CohortHasher, WavePlan, bucket, plan_waves
from otaguard.rollout.counters import (
    CampaignCounters,
    FailureClass,
    HealthReport,
    HealthTally,
    Retried,
    Stage,
    Transition,
    WaveCounters,
)
from otaguard.rollout.evaluator import (
    Action,
    Approve,
    CampaignState,
    Cancel,
    Decision,
    Halt,
    Pause,
    Resume,
    Stamp,
    Start,
    Status,
    Tick,
    create,
    retry_after,
    step,
)
from otaguard.rollout.persist import state_from_dict, state_to_dict
from otaguard.rollout.policy import DEFAULT, Policy, parse_policy, policy_from_mapping

__all__ = [
    "DEFAULT",
    "Action",
    "Approve",
    "CampaignCounters",
    "CampaignState",
    "Cancel",
    "CohortHasher",
    "Decision",
    "FailureClass",
    "FailureFigures",
    "Halt",
    "HealthFigures",
    "HealthReport",
    "HealthTally",
    "Pause",
    "Policy",
    "Resume",
    "Retried",
    "Stage",
    "Stamp",
    "Start",
    "Status",
    "Tick",
    "Transition",
    "WaveCounters",
    "WavePlan",
    "bucket",
    "create",
    "parse_policy",
    "plan_waves",
    "policy_from_mapping",
    "retry_after",
    "state_from_dict",
    "state_to_dict",
    "step",
]
