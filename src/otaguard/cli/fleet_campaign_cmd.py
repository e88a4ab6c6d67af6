"""``otaguard fleet campaign``: staged rollouts on the fleet server (docs/rollout.md).

``create`` names the release target(s), the devices (``--hardware-id``, ``--region``,
``--tag K=V``, ``--device ID``), the ECU versions the release may be installed over
(``--compatible ECU=VERSION``, repeatable; ECU = hardware id or serial; by default what the
release itself declares, ``repo add-target --compatible-with``) and the policy
(``--policy POLICY.toml``; the documented default without it). ``approve`` must be run by
another person than the creator (the server refuses otherwise, exit 1); ``start``,
``pause``, ``resume``, ``halt`` (the kill switch) and ``cancel`` act at once; ``status``
and ``list`` read. Thin: parse, call :class:`~otaguard.server.client.FleetClient`, print.
Exit codes as ``otaguard fleet``: 1 refused (role, two-person rule, invalid policy), 2
usage, I/O, connection or a state conflict (e.g. resuming a halted campaign).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

MAX_POLICY = 64 * 1024


@click.group("campaign")
def campaign() -> None:
    """Staged rollouts: create, approve, start, pause, resume, halt, cancel, status, list."""


def _compatible(items: Sequence[str]) -> dict[str, list[str]]:
    from otaguard.errors import UsageError

    out: dict[str, list[str]] = {}
    for item in items:
        ecu, sep, version = item.partition("=")
        if not sep or not ecu or not version:
            raise UsageError(f"--compatible {item[:60]!r}: use ECU=VERSION")
        out.setdefault(ecu, []).append(version)
    return out


@campaign.command("create")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option("--name", required=True, help="A name for the campaign.")
@click.option("--hardware-id", help="Devices of enrolment groups with this hardware id.")
@click.option("--region", help="Devices of enrolment groups in this region.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Group tag (repeatable).")
@click.option("--device", "devices", multiple=True, metavar="ID", help="Device id (repeatable).")
@click.option(
    "--compatible",
    "compatible",
    multiple=True,
    metavar="ECU=VERSION",
    help="An installed version the release may replace (repeatable; ECU: hardware id or "
    "serial). Default: what the release declares (repo add-target --compatible-with); "
    "may narrow it, not widen it.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    help="Rollout policy TOML (default: the documented default policy).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def create(
    ctx: click.Context,
    targets: tuple[str, ...],
    name: str,
    hardware_id: str | None,
    region: str | None,
    tags: tuple[str, ...],
    devices: tuple[str, ...],
    compatible: tuple[str, ...],
    policy_file: str | None,
    as_json: bool,
) -> None:
    """A draft campaign of TARGET(s); waves are planned over the devices selected now."""
    from otaguard._files import read_bounded
    from otaguard.cli.fleet_cmd import _client, _tags
    from otaguard.rollout import parse_policy

    policy = None
    if policy_file is not None:
        policy = read_bounded(policy_file, MAX_POLICY, "policy").decode("utf-8", "replace")
        parse_policy(policy)  # refused here (exit 2, one line) before anything is sent
    selector = {
        "hardware_id": hardware_id,
        "region": region,
        "tags": _tags(tags),
        "devices": list(devices),
    }
    with _client(ctx) as client:
        made = client.create_campaign(
            name=name,
            targets=targets,
            selector=selector,
            compatible=_compatible(compatible),
            policy=policy,
        )
    _show(made, as_json)


def _act(action: str, doc: str) -> None:
    @campaign.command(action, help=doc)
    @click.argument("campaign_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_context
    def command(ctx: click.Context, campaign_id: str, as_json: bool) -> None:
        from otaguard.cli.fleet_cmd import _client

        with _client(ctx) as client:
            _show(client.campaign_action(campaign_id, action), as_json)


_act("approve", "Approve a draft campaign (not its creator: the two-person rule).")
_act("start", "Start an approved campaign: its first wave is offered the release.")
_act("pause", "Pause: no new offers; devices in flight go on.")
_act("resume", "Resume a paused campaign.")
_act("cancel", "Cancel: no new offers; downloads in progress are abandoned.")


@campaign.command("halt")
@click.argument("campaign_id")
@click.option("--reason", default="manual halt", help="Why (recorded in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def halt(ctx: click.Context, campaign_id: str, reason: str, as_json: bool) -> None:
    """The kill switch: no new offers from now on; downloads are abandoned and devices in
    trial boot told to revert (policy ``halt.revert_on_halt``)."""
    from otaguard.cli.fleet_cmd import _client

    with _client(ctx) as client:
        _show(client.campaign_action(campaign_id, "halt", reason=reason), as_json)


@campaign.command("status")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def status(ctx: click.Context, campaign_id: str, as_json: bool) -> None:
    """A campaign's state, its waves' counters and the incompatible devices."""
    from otaguard.cli.fleet_cmd import _client

    with _client(ctx) as client:
        _show(client.campaign(campaign_id), as_json)


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every campaign."""
    from otaguard.cli.fleet_cmd import _client, _print, _table

    with _client(ctx) as client:
        found = client.campaigns()
    _print(
        found,
        as_json,
        lambda items: _table(
            f"{len(items)} campaign(s)",
            ["id", "name", "targets", "status", "wave", "devices", "created by"],
            [
                [c["id"], c["name"], " ".join(c["targets"]), c["status"], c["wave"],
                 c["population"], c["created_by"]]
                for c in items
            ],
        ),
    )  # fmt: skip


def _show(value: dict[str, Any], as_json: bool) -> None:
    from otaguard.cli.fleet_cmd import _print, _table

    def table(c: dict[str, Any]) -> Any:
        title = (
            f"campaign {c['id']} ({c['name']}): {c['status']}, wave {c['wave']} of "
            f"{len(c['plan'])}, {c['population']} devices, {c['incompatible']} incompatible"
        )
        if c.get("end_reason"):
            title += f"\n{c['end_reason']}"
        for warning in c.get("warnings") or ():
            title += f"\nwarning: {warning}"
        columns = ["wave", "offered", "downloading", "installed", "confirmed", "failed",
                   "silent", "abandoned", "reverted"]  # fmt: skip
        rows = [
            [w["wave"], w["total"], w["downloading"], w["installed"], w["confirmed"],
             w["failures"] - w["silent"], w["silent"], w["abandoned"], w["reverted"]]
            for w in c["waves"]
        ]  # fmt: skip
        return _table(title, columns, rows)

    _print(value, as_json, table)
