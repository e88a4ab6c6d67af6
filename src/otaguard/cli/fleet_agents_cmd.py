"""``otaguard fleet-agents``: many lightweight agents against a fleet server (demo, bench).

Thin: parses options, builds :class:`otaguard.sim.http_fleet.FleetConfig` and identities
issued by the given device CA, runs :func:`~otaguard.sim.http_fleet.run_fleet` until
``--seconds`` pass or ``--stop-file`` appears, and prints what the fleet did as JSON.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from otaguard.errors import UsageError


def _pairs(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{what} {item[:80]!r}: use NAME=VALUE")
        out.append((name, value))
    return out


@click.command("fleet-agents")
@click.option("--server", required=True, help="The fleet server's URL.")
@click.option("--device-ca", required=True, type=click.Path(file_okay=False), help="Device CA dir.")
@click.option("--count", type=click.IntRange(1, 100_000), required=True, help="How many agents.")
@click.option("--prefix", default="LT", show_default=True, help="Device ids: PREFIX000000...")
@click.option("--hardware-id", required=True)
@click.option("--director-root", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--repo-metadata",
    required=True,
    type=click.Path(file_okay=False),
    help="The published repository's metadata directory (its newest N.targets.json).",
)
@click.option("--factory", required=True, metavar="TARGET=IMAGE", help="What every agent runs.")
@click.option("--release", "releases", multiple=True, metavar="TARGET=IMAGE", help="Repeatable.")
@click.option("--fail", "fails", multiple=True, metavar="TARGET=RATE", help="Boot failure rate.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--push", is_flag=True, help="Subscribe to the topics the server names (MQTT).")
@click.option("--seconds", type=float, default=300.0, show_default=True, help="Run at most this.")
@click.option("--stop-file", type=click.Path(dir_okay=False), help="Stop once this file exists.")
@click.option("--seed", type=int, default=0, show_default=True)
def fleet_agents(
    server: str,
    device_ca: str,
    count: int,
    prefix: str,
    hardware_id: str,
    director_root: str,
    repo_metadata: str,
    factory: str,
    releases: tuple[str, ...],
    fails: tuple[str, ...],
    poll: float,
    push: bool,
    seconds: float,
    stop_file: str | None,
    seed: int,
) -> None:
    """Run COUNT lightweight agents (the device protocol, outcomes drawn per release)."""
    from otaguard.image.envelope_verify import read_protected
    from otaguard.pki.store import load_ca_dir
    from otaguard.sim import http_fleet as hf

    def image(target: str, path: str) -> hf.Image:
        data = Path(path).read_bytes()
        meta = read_protected(io.BytesIO(data))[1]  # what the image says (verified by devices)
        return hf.image_of(target, data, meta.version, meta.security_counter)

    (factory_pair,) = _pairs([factory], "--factory")
    images = {t: image(t, p) for t, p in _pairs(releases, "--release")}
    try:
        rates = {t: float(r) for t, r in _pairs(fails, "--fail")}
    except ValueError as exc:
        raise UsageError(f"--fail: {exc}") from None
    metadata = sorted(
        Path(repo_metadata).glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0])
    )
    if not metadata:
        raise UsageError(f"{repo_metadata}: no N.targets.json (publish a release first)")
    config = hf.FleetConfig(
        server=server,
        hardware_id=hardware_id,
        director_root=hf.director_root_of(Path(director_root).read_bytes()),
        repository=hf.repository_targets(metadata[-1].read_bytes()),
        factory=image(*factory_pair),
        releases=images,
        failure_rate=rates,
        poll_s=poll,
        download_s=poll / 2,
        trial_s=poll / 2,
        health_window_s=max(2.0, 2 * poll),
        push_devices=count if push else 0,
        seed=seed,
    )
    ca = load_ca_dir(Path(device_ca))
    identities = hf.issue_identities(ca.issuer(), list(ca.chain), prefix, count)
    end = time.monotonic() + seconds

    async def until(_stats: hf.FleetStats) -> None:
        while time.monotonic() < end and not (stop_file and Path(stop_file).exists()):
            await asyncio.sleep(0.2)

    stats = asyncio.run(hf.run_fleet(config, identities, until))
    summary: dict[str, Any] = {
        "devices": count,
        "outcomes": dict(sorted(stats.outcomes.items())),
        "offered": {t: len(d) for t, d in stats.started_by.items()},
        "requests": sum(stats.requests.values()),
        "health_reports": stats.health_reports,
        "pushed_checkins": len(stats.pushed_checkins),
        "errors": dict(stats.errors),
    }
    click.echo(json.dumps(summary, sort_keys=True))
