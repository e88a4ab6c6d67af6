"""Campaigns at fleet scale: the 5 M-vehicle simulation's wall time and an evaluator tick.

Why (issue 16, "Benchmarks"): the simulator must show a rollout policy's effect on the whole
fleet within a minute on this 2-core machine, so that a policy can be tried before a release;
and the evaluator runs once per tick on the server, so its cost per tick must not grow with
the fleet. Each simulation is a whole ``otaguard sim --json`` process (start-up, hashing 5 M
device ids for their cohorts, the fleet model and the real evaluator), one run each: the bad
release (20 % failures) and the good one (0.5 %). The tick is timed in-process: a campaign in
its last wave with every counter filled in, median of many ticks.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from _common import check, quick

TITLE = "Campaigns: the 5 M-vehicle simulation and the evaluator's tick"

GOAL_S = 60.0


def _setup() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "src"))


def _simulations(devices: int) -> list[str]:
    rows = [
        "| release | wall time | halted | halt wave | exposed | installed | first wave | "
        "time to halt / complete (simulated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for label, rate in (("bad (20 % fail)", "0.2"), ("good (0.5 % fail)", "0.005")):
        start = time.perf_counter()
        proc = check(
            ["otaguard", "sim", "--devices", str(devices), "--bad-release-failure-rate", rate,
             "--json", "--seed", "1"],
            timeout=1800,
        )  # fmt: skip
        wall = time.perf_counter() - start
        data = json.loads(proc.stdout)
        simulated = data["time_to_halt_s"] or data["time_to_complete_s"]
        verdict = "met" if wall < GOAL_S else "**NOT met**"
        rows.append(
            f"| {label} | {wall:.1f} s ({verdict}) | {data['halted']} | {data['halt_wave']} | "
            f"{data['exposed']:,} | {data['installed']:,} | {data['waves'][0]['devices']:,} | "
            f"{simulated / 3600:.2f} h |"
            if simulated
            else f"| {label} | {wall:.1f} s | {data['halted']} | - | - | - | - | not ended |"
        )
        good = rate == "0.005"
        if good and data["status"] != "completed":
            failed.append("the good release did not complete")
        if not good and not (data["halted"] and data["halt_wave"] == 0):
            failed.append("the bad release was not halted in its first wave")
        if not good and data["installed"] > data["waves"][0]["devices"]:
            failed.append("the bad release reached more than its first wave")
    if failed:
        from _common import BenchFailed

        raise BenchFailed("; ".join(failed), "\n".join(rows))
    return rows


def _tick() -> list[str]:
    _setup()
    from otaguard.rollout import (
        DEFAULT,
        Approve,
        CampaignCounters,
        FailureClass,
        HealthReport,
        HealthTally,
        Stage,
        Start,
        Tick,
        Transition,
        WaveCounters,
        create,
        step,
    )  # fmt: skip

    state = create("bench", DEFAULT, 5_000_000, by="a", now=0.0)
    state, _ = step(state, Approve("b"), 0.0)
    state, _ = step(state, Start("a"), 0.0)
    state = state.__class__(**{**state.__dict__, "wave": state.plan.waves - 1})
    waves = []
    for i in range(state.plan.waves):
        size = state.plan.planned_size(i)
        c = WaveCounters().add(Transition(None, Stage.DOWNLOADING), size)
        c = c.add(Transition(Stage.DOWNLOADING, Stage.INSTALLED), size - size // 100)
        c = c.add(Transition(Stage.INSTALLED, Stage.CONFIRMED), size // 2)
        c = c.add(Transition(Stage.DOWNLOADING, Stage.FAILED, FailureClass.INSTALL), size // 200)
        c = c.add(HealthReport(3600.0, counts={"resets": 0, "crashes": 0}), size // 2)
        waves.append(c)
    control = HealthTally().add(HealthReport(3600.0, counts={"resets": 1, "crashes": 2}), 10**6)
    counters = CampaignCounters(tuple(waves), control)
    times = []
    for n in range(2000):
        start = time.perf_counter()
        step(state, Tick(counters), 60.0 + n)
        times.append(time.perf_counter() - start)
    one = WaveCounters().add(Transition(None, Stage.DOWNLOADING))
    adds = []
    for _ in range(2000):
        start = time.perf_counter()
        one.add(Transition(Stage.DOWNLOADING, Stage.INSTALLED))
        adds.append(time.perf_counter() - start)
    limit, plans = _exact_plans()
    return [
        "| operation | median | note |",
        "|---|---|---|",
        f"| exact wave plan over {limit:,} selected devices (HMAC of every id, sort) | "
        f"{statistics.median(plans):.2f} s | what `campaign create` adds at the server's "
        "`EXACT_PLAN_LIMIT`, besides reading the ids |",
        f"| evaluator tick, 5 waves of a 5 M campaign, 2 health checks | "
        f"{statistics.median(times) * 1e6:.0f} us | independent of the fleet: counters only |",
        f"| `WaveCounters.add` of one report | {statistics.median(adds) * 1e6:.1f} us | "
        "what the server pays per report, besides its database write |",
    ]


def _exact_plans() -> tuple[int, list[float]]:
    """Campaign creation sizes the waves exactly from the selection's buckets, up to the
    server's limit: the cost at the limit."""
    from otaguard.rollout import DEFAULT, CohortHasher, plan_waves
    from otaguard.server.services.campaigns import EXACT_PLAN_LIMIT

    ids = [f"VIN{i:014d}" for i in range(EXACT_PLAN_LIMIT)]
    times = []
    for n in range(3):
        start = time.perf_counter()
        buckets = CohortHasher(bytes(32), f"c-{n:012x}").buckets(ids)
        plan_waves(DEFAULT.waves, len(buckets), buckets)
        times.append(time.perf_counter() - start)
    return EXACT_PLAN_LIMIT, times


def run(workdir: Path) -> str:
    devices = 200_000 if quick() else 5_000_000
    lines = [
        f"`otaguard sim --devices {devices:,} --json --seed 1`, the default policy, one run "
        f"each. **Goal: under {GOAL_S:.0f} s wall**; the bad release halted in its first wave "
        "with no more than that wave installed; the good one completed.",
        "",
    ]
    lines += _simulations(devices)
    lines += ["", *_tick()]
    return "\n".join(lines) + "\n"
