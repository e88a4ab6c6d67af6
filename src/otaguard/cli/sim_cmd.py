"""``otaguard sim``: a staged rollout over a simulated fleet, decided by the real evaluator.

Without ``--policy`` the documented default policy (docs/rollout.md) is used. The release
fails on 0.5 % of devices unless ``--bad-release-failure-rate`` says otherwise. Prints a table,
or with ``--json`` one JSON object whose first keys are halted, halt_wave, exposed, installed,
time_to_halt_s and time_to_complete_s; the same seed gives the same output.
"""

from __future__ import annotations

import json

import click

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard.errors import RolloutPolicyError, UsageError

#: A policy is a page of TOML; anything much larger is not one.
POLICY_LIMIT = 1 << 20
#: Above this the fleet's arrays no longer fit comfortably in memory here.
MAX_DEVICES = 50_000_000
GOOD_RELEASE_FAILURE_RATE = 0.005


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{name} must be in [0, 1], got {value}")
    return value


def _summary_keys() -> tuple[str, ...]:
    return ("halted", "halt_wave", "exposed", "installed", "time_to_halt_s", "time_to_complete_s")


@click.command("sim")
@click.option(
    "--devices", type=int, required=True, help="Fleet size (devices the campaign selects)."
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False),
    help="Rollout policy (TOML); default: the documented default policy.",
)
@click.option(
    "--bad-release-failure-rate",
    type=float,
    default=None,
    help=f"Share of devices the release fails on (default {GOOD_RELEASE_FAILURE_RATE}).",
)
@click.option(
    "--silent-rate",
    type=float,
    default=0.001,
    show_default=True,
    help="Share of offered devices never heard of again.",
)
@click.option(
    "--health-ratio",
    type=float,
    default=1.0,
    show_default=True,
    help="Reset and crash rate of updated devices over the control group's.",
)
@click.option(
    "--install-gate",
    is_flag=True,
    help="Agents check in between download and install (a halt then stops more installs).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG of the curves."
)
def sim(
    devices: int,
    policy_path: str | None,
    bad_release_failure_rate: float | None,
    silent_rate: float,
    health_ratio: float,
    install_gate: bool,
    seed: int,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Simulate a staged rollout to DEVICES devices and report what the kill switch did."""
    from otaguard.rollout import DEFAULT, parse_policy

    if not 1 <= devices <= MAX_DEVICES:
        raise UsageError(f"--devices must be in [1, {MAX_DEVICES}], got {devices}")
    failure_rate = _rate(
        "--bad-release-failure-rate",
        GOOD_RELEASE_FAILURE_RATE if bad_release_failure_rate is None else bad_release_failure_rate,
    )
    _rate("--silent-rate", silent_rate)
    if not 0.0 <= health_ratio <= 1000.0:
        raise UsageError(f"--health-ratio must be in [0, 1000], got {health_ratio}")
    policy = DEFAULT
    if policy_path is not None:
        text = read_bounded(policy_path, POLICY_LIMIT, "policy")
        try:
            policy = parse_policy(text)
        except RolloutPolicyError as exc:
            raise RolloutPolicyError(f"{policy_path}: {exc}") from None

    from otaguard.sim import FleetModel, simulate

    model = FleetModel(
        devices=devices,
        failure_rate=failure_rate,
        silent_rate=silent_rate,
        health_ratio=health_ratio,
        install_gate=install_gate,
        seed=seed,
    )
    result = simulate(model, policy)
    if plot_path is not None:
        from otaguard.sim.plot import render_png

        write_atomic(plot_path, render_png(result))
    if as_json:
        data = result.to_json()
        ordered = {key: data.pop(key) for key in _summary_keys()}
        click.echo(json.dumps({**ordered, **data}, sort_keys=False))
        return
    _table(result)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} s ({value / 3600:.2f} h)"


def _table(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from otaguard.sim import SimResult

    assert isinstance(result, SimResult)
    console = Console(soft_wrap=True)
    summary = Table(title=f"otaguard sim: {result.devices:,} devices, seed {result.seed}")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row("release failure rate", f"{result.failure_rate:g}")
    summary.add_row("silent rate", f"{result.silent_rate:g}")
    summary.add_row("campaign", result.status)
    summary.add_row("halted", "yes" if result.halted else "no")
    summary.add_row("halt wave", "-" if result.halt_wave is None else str(result.halt_wave))
    summary.add_row("exposed (ran the release before the decision)", f"{result.exposed:,}")
    summary.add_row("installed (in all)", f"{result.installed:,}")
    summary.add_row("told to revert", f"{result.reverted:,}")
    summary.add_row("downloads abandoned", f"{result.abandoned:,}")
    summary.add_row("time to halt", _seconds(result.time_to_halt_s))
    summary.add_row("time to complete", _seconds(result.time_to_complete_s))
    console.print(summary)
    waves = Table(title="waves")
    for column in ("wave", "planned", "devices", "opened at"):
        waves.add_column(column, justify="right")
    for wave in result.waves:
        opened = wave["opened_at_s"]
        waves.add_row(
            str(wave["wave"]),
            f"{wave['planned']:,}",
            f"{wave['devices']:,}",
            "-" if opened is None else _seconds(opened),
        )
    console.print(waves)
    if result.reason:
        console.print(f"decision: {result.reason}", highlight=False)
