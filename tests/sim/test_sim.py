"""The fleet simulator: cohort parity, counters parity, determinism, outcomes, and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import CliResult, assert_one_line
from otaguard.rollout import DEFAULT, CohortHasher, WaveCounters, bucket, plan_waves
from otaguard.rollout.policy import Waves
from otaguard.sim import FleetModel, simulate
from otaguard.sim.cohorts import device_ids, wave_index, wave_sizes
from otaguard.sim.engine import _wave_counters, cohort_key
from otaguard.sim.fleet import open_wave

SUMMARY = ("halted", "halt_wave", "exposed", "installed", "time_to_halt_s", "time_to_complete_s")


@given(
    key=st.binary(max_size=64),
    fractions=st.lists(st.floats(0.001, 0.999), max_size=5, unique=True).map(
        lambda xs: (*sorted(xs), 1.0)
    ),
    population=st.integers(1, 3000),
)
@settings(max_examples=30, deadline=None)
def test_vectorised_waves_equal_the_scalar_rule(
    key: bytes, fractions: tuple[float, ...], population: int
) -> None:
    plan = plan_waves(Waves(fractions, min_devices=1), population)
    ids = device_ids(0, population)
    fast = wave_index(plan, CohortHasher(key, "camp").prefixes(ids))
    slow = [plan.wave_of(bucket(key, "camp", i)) for i in ids]
    assert fast.tolist() == slow
    sizes = wave_sizes(key, "camp", plan)
    assert sizes.tolist() == np.bincount(slow, minlength=plan.waves).tolist()


def test_bulk_counters_equal_reports_added_one_at_a_time() -> None:
    """The sim's counters are what a server adding each report as it comes would hold."""
    model = FleetModel(devices=3000, failure_rate=0.1, silent_rate=0.05, transient_rate=0.3)
    policy = DEFAULT
    timeline = open_wave(np.random.default_rng(5), model, policy, 3000, 0.0)
    reports = sorted(
        ((float(t), order, report) for order, (report, times) in enumerate(timeline.events)
         for t in times if np.isfinite(t)),
        key=lambda item: (item[0], item[1]),
    )  # fmt: skip
    for at in (600.0, 1800.0, 4 * 3600.0, 13 * 3600.0):
        one = WaveCounters()
        for t, _, report in reports:
            if t <= at:
                one = one.add(report)  # raises if a stage would go below zero
        bulk = _wave_counters(timeline, at, policy.health.window_s)
        assert bulk.__class__(**{**bulk.__dict__, "health": one.health}) == one
    assert one.silent > 0 and one.failed_boot > 0 and one.retries > 0


def test_same_seed_same_output_other_seed_other_output() -> None:
    model = FleetModel(devices=30_000, failure_rate=0.2, seed=11)
    first, second = simulate(model), simulate(model)
    assert first.to_json() == second.to_json()
    assert first.series == second.series
    other = simulate(FleetModel(devices=30_000, failure_rate=0.2, seed=12))
    assert other.to_json() != first.to_json()


def test_mid_size_bad_release_is_halted_in_its_first_wave() -> None:
    result = simulate(FleetModel(devices=200_000, failure_rate=0.2, seed=1))
    first_wave = result.waves[0]["devices"]
    assert result.halted and result.halt_wave == 0
    assert 0 < result.exposed <= result.installed <= first_wave
    assert result.waves[1]["opened_at_s"] is None
    assert result.reverted > 0  # revert_on_halt: devices in trial boot told to revert
    halt = result.decisions[-1]
    assert halt["action"] == "halt" and halt["failure"][0]["signal"]


def test_mid_size_good_release_completes_every_wave() -> None:
    result = simulate(FleetModel(devices=200_000, failure_rate=0.005, seed=1))
    assert result.status == "completed" and not result.halted
    assert [d["action"] for d in result.decisions] == ["advance"] * 4 + ["complete"]
    assert result.installed > 0.99 * 200_000 * (1 - 0.005 - 0.001)
    assert result.time_to_complete_s is not None and result.time_to_halt_s is None


def test_silent_devices_halt_the_simulated_campaign_at_the_deadline() -> None:
    result = simulate(FleetModel(devices=20_000, failure_rate=0.0, silent_rate=0.1, seed=2))
    assert result.halted and result.halt_wave == 0
    assert result.time_to_halt_s is not None
    assert result.time_to_halt_s >= DEFAULT.halt.deadline_s  # silence counts only after it


def test_health_worse_than_control_halts_the_simulated_campaign() -> None:
    result = simulate(FleetModel(devices=50_000, failure_rate=0.005, health_ratio=4.0, seed=2))
    assert result.halted and "health" in (result.reason or "")


def test_install_gate_cuts_installs_after_a_halt() -> None:
    plain = simulate(FleetModel(devices=50_000, failure_rate=0.2, seed=4))
    gated = simulate(FleetModel(devices=50_000, failure_rate=0.2, seed=4, install_gate=True))
    assert plain.exposed == gated.exposed  # the same campaign up to the halt
    assert gated.installed < plain.installed


def test_cohort_key_depends_on_the_seed() -> None:
    assert cohort_key(1) != cohort_key(2)


# --- the command ----------------------------------------------------------------------


def test_sim_json(cli: Callable[..., CliResult]) -> None:
    result = cli("sim", "--devices", "20000", "--bad-release-failure-rate", "0.2", "--json")
    assert result.code == 0, result.err
    data = result.json
    assert tuple(data)[: len(SUMMARY)] == SUMMARY
    assert data["halted"] is True and data["halt_wave"] == 0
    again = cli("sim", "--devices", "20000", "--bad-release-failure-rate", "0.2", "--json")
    assert again.out == result.out


def test_sim_table_and_plot(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    result = cli("sim", "--devices", "5000", "--plot", out, "--seed", "3")
    assert result.code == 0, result.err
    assert "campaign" in result.out and "completed" in result.out
    first = out.read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    cli("sim", "--devices", "5000", "--plot", out, "--seed", "3")
    assert out.read_bytes() == first  # no timestamp in the PNG


def test_sim_with_a_policy_file(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[waves]\nfractions = [0.5, 1.0]\nmin_devices = 10\n")
    result = cli("sim", "--devices", "4000", "--policy", policy, "--json")
    assert result.code == 0, result.err
    assert [w["planned"] for w in result.json["waves"]] == [2000, 2000]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--devices", "0"], "--devices must be in"),
        (["--devices", "10", "--bad-release-failure-rate", "1.5"], "must be in [0, 1]"),
        (["--devices", "10", "--silent-rate", "-0.1"], "--silent-rate must be in"),
        (["--devices", "10", "--health-ratio", "-1"], "--health-ratio must be in"),
        (["--devices", "10", "--policy", "/nonexistent/policy.toml"], "cannot read"),
        (["--devices", "ten"], "is not a valid integer"),
    ],
)
def test_sim_usage_errors_exit_2(
    cli: Callable[..., CliResult], args: list[str], message: str
) -> None:
    result = cli("sim", *args)
    assert result.code == 2 and message in result.err
    assert_one_line(result.err)


def test_sim_bad_policy_is_one_line_exit_2(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[halt]\nconfidence = 2\n")
    result = cli("sim", "--devices", "10", "--policy", policy)
    assert result.code == 2
    assert_one_line(result.err)
    assert "p.toml: policy: halt.confidence must be in" in result.err
    policy.write_bytes(b"\x00\xff garbage [[[")
    result = cli("sim", "--devices", "10", "--policy", policy)
    assert result.code == 2
    assert_one_line(result.err)
