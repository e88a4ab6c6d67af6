"""``otaguard device``: a simulated device in a directory -- flash, fuses, bootloader.

Every command is one event in the device's life (manufacture, an update
arriving, a reset, the health check passing). ``--power-cut-at N`` and
``--tear-at N`` make the N-th flash operation of that event (counting from
0) lose power before it starts or half-way through it; the command then
reports how far it got and exits 0: the simulation did what was asked. The
next ``device boot`` shows what the device makes of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from otaguard._files import read_bounded
from otaguard._stdio import input_path, open_input
from otaguard.cli import params
from otaguard.crypto.loader import MAX_KEY_FILE

_dir_arg = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))


@contextlib.contextmanager
def _session(directory: Path, opts: dict[str, Any], event: str) -> Iterator[Any]:
    """Open the device with the fault plan armed; turn a power cut into a report."""
    from otaguard.device.faults import FaultPlan, PowerLoss, TearFill
    from otaguard.device.store import open_device, save_running

    plan = FaultPlan(
        cut_before=opts["power_cut_at"],
        tear_at=opts["tear_at"],
        fill=TearFill(opts["tear_fill"]),
        seed=opts["tear_seed"],
    )
    with open_device(directory) as device:
        device.arm(plan)
        try:
            yield device
        except PowerLoss as cut:
            save_running(directory, None)  # RAM is gone
            _emit(
                opts,
                {"power_cut": True, "torn": cut.torn, "flash_ops": device.clock.count},
                f"power lost {'during' if cut.torn else 'before'} flash operation {cut.op} of "
                f"{event} ({device.clock.count} operation(s) done): the device is off",
            )


def _emit(opts: dict[str, Any], report: dict[str, Any], line: str) -> None:
    if opts.get("as_json"):
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(line)


@click.group()
def device() -> None:
    """Simulate a device: flash, OTP fuses, A/B bootloader, power loss."""


@device.command("init")
@_dir_arg
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Public key or root CA certificate whose hash is burned into OTP (repeatable).",
)
@click.option("--hardware-id", required=True, help="Hardware id of the main component.")
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="NAME=HWID",
    help="A further firmware component (e.g. radio=acme-radio-v1); repeatable.",
)
@click.option("--geometry", default="nor-4k", show_default=True, help="Flash geometry preset.")
@click.option(
    "--erased-value",
    type=click.Choice(["0xff", "0x00"]),
    default=None,
    help="Override the geometry's erased value.",
)
@click.option("--slot-size", type=click.IntRange(1), default=None, help="Slot size in bytes.")
@click.option("--fuse-bits", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option(
    "--counter-backend",
    type=click.Choice(["fuses", "rpmb"]),
    default="fuses",
    show_default=True,
    help="Thermometer-coded OTP fuses, or an RPMB-like monotonic counter.",
)
@click.option("--trial-tries", type=click.IntRange(1, 7), default=3, show_default=True)
@click.option(
    "--strict-counter",
    is_flag=True,
    help="Install only images with a counter ABOVE the fuses (default: at least equal).",
)
@click.option("--region", default=None, help="The device's region (checked against chains).")
@params.JSON
def init(directory: Path, **opts: Any) -> None:
    """Manufacture a device in DIRECTORY: blank flash, anchors in OTP, counters at 0."""
    from otaguard.device.manufacture import components_of, geometry_of, manufacture
    from otaguard.device.model import DeviceConfig

    erased = int(opts["erased_value"], 16) if opts["erased_value"] else None
    geometry = geometry_of(opts["geometry"], erased_value=erased, slot_size=opts["slot_size"])
    config = DeviceConfig(
        geometry,
        components_of(opts["hardware_id"], opts["components"]),
        trial_tries=opts["trial_tries"],
        strict_counter=opts["strict_counter"],
        region=opts["region"],
    )
    done = manufacture(
        directory,
        config,
        opts["trusted_keys"],
        fuse_bits=opts["fuse_bits"],
        counter_backend=opts["counter_backend"],
    )
    _emit(
        opts,
        done.to_json(),
        f"device {directory}: {geometry.name} flash ({geometry.sector_size}-byte sectors, "
        f"erased 0x{geometry.erased:02x}), {done.anchors} anchor(s) in OTP, "
        f"components {', '.join(c.name for c in config.components)}",
    )


@device.command("install")
@_dir_arg
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option(
    "--replace-staged",
    is_flag=True,
    help="Overwrite an installed update that has not been confirmed yet (else refused).",
)
@params.FAULT_OPTIONS
def install_cmd(
    directory: Path, images: tuple[str, ...], replace_staged: bool, **opts: Any
) -> None:
    """Install IMAGE (or NAME=IMAGE for each component of a set) into the inactive slot.

    IMAGE may be a signed delta (``otaguard delta create``): its base is read
    from the active slot and the rebuilt image is verified like any other.
    An update that is installed and not yet confirmed is never overwritten
    without --replace-staged.
    """
    from otaguard.device.install import StagedUpdateError, images_by_component, install_update
    from otaguard.device.store import load_running

    running = load_running(directory)
    with _session(directory, opts, "install") as dev, contextlib.ExitStack() as stack:
        files = {
            name: stack.enter_context(open_input(path))
            for name, path in images_by_component(dev.config.names, images).items()
        }
        try:
            result = install_update(dev, files, running=running, replace_staged=replace_staged)
        except StagedUpdateError as exc:
            raise StagedUpdateError(f"{exc} (--replace-staged)") from None
        main = result.images[0]
        replaced = ", ".join(f"{n} {v or '(did not verify)'}" for n, v in result.replaced)
        _emit(
            opts,
            result.to_json(),
            (
                f"replaced the unconfirmed update in slot {result.slot} ({replaced})\n"
                if replaced
                else ""
            )
            + f"installed {main.metadata.version} (security counter "
            f"{main.metadata.security_counter}) into slot {result.slot}, verified in flash: "
            f"a trial with {result.tries} tries from the next boot "
            f"({result.flash_ops} flash operations)",
        )


@device.command("boot")
@_dir_arg
@params.FAULT_OPTIONS
def boot_cmd(directory: Path, **opts: Any) -> None:
    """Reset the device: the bootloader picks, verifies and boots a slot."""
    from otaguard.device.bootloader import boot
    from otaguard.device.install import running_of
    from otaguard.device.store import save_running
    from otaguard.errors import RecoveryError

    save_running(directory, None)  # a reset: the running firmware is gone
    with _session(directory, opts, "boot") as dev:
        result = boot(dev)
        save_running(directory, running_of(result))
        main = result.main
        lines = [f"slot {s}: refused ({check}): {why}" for s, check, why in result.rejected]
        if result.rebuilt:
            lines.insert(0, "both boot-control copies were invalid: rebuilt from the slots")
        if main is not None:
            how = (
                f"trial: {result.tries_left} more trial boot(s) before it reverts, unless confirmed"
                if result.state == "trial"
                else "confirmed"
            )
            lines.append(
                f"booted slot {result.slot}: {main.metadata.version}, security counter "
                f"{main.metadata.security_counter} ({how})"
            )
        if opts["as_json"]:
            click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
        elif lines:
            click.echo("\n".join(lines))
        if result.state == "recovery":
            raise RecoveryError("no slot holds an image that verifies: the device is in recovery")


@device.command("confirm")
@_dir_arg
@params.FAULT_OPTIONS
def confirm_cmd(directory: Path, **opts: Any) -> None:
    """The running firmware is healthy: make its slot permanent and raise the fuses."""
    from otaguard.device.install import confirm
    from otaguard.device.status import confirm_report
    from otaguard.device.store import load_running, save_running

    running = load_running(directory)
    with _session(directory, opts, "confirm") as dev:
        result = confirm(dev, running)
        if running is not None:
            save_running(directory, dataclasses.replace(running, trial=False))
        report = confirm_report(dev, result)
        fuses = report["fuses"]
        _emit(
            opts,
            report,
            f"slot {result.slot} ({report['version']}) is "
            f"{'already ' if result.already_confirmed else ''}permanent; security counter fuses "
            + ", ".join(f"{n}={f['counter']} ({f['left']} left)" for n, f in fuses.items()),
        )


@device.command("reject")
@_dir_arg
def reject_cmd(directory: Path) -> None:
    """The running trial failed its health check: never boot it again (reverts at reset)."""
    from otaguard.device.install import reject
    from otaguard.device.store import load_running, open_device

    running = load_running(directory)
    with open_device(directory) as dev:
        slot = reject(dev, running)
    click.echo(f"slot {slot} rejected: the next boot returns to the previous firmware")


@device.command("rotate-anchor")
@_dir_arg
@click.argument("message", type=click.Path(dir_okay=False, exists=True, allow_dash=True))
def rotate_anchor_cmd(directory: Path, message: str) -> None:
    """Accept a new root through a rotation message signed by a root the device trusts."""
    from otaguard.device.store import rotate_anchor

    subject, epoch = rotate_anchor(
        directory, read_bounded(input_path(message), MAX_KEY_FILE, "rotation message")
    )
    click.echo(f"anchored {subject}; key epoch now {epoch}: older roots are retired")


@device.command("status")
@_dir_arg
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_cmd(directory: Path, as_json: bool) -> None:
    """Show slots, images, boot control, fuses and the update state (reads only)."""
    from otaguard.device.status import device_status
    from otaguard.device.store import load_running, open_device

    running = load_running(directory)
    with open_device(directory, writable=False) as dev:
        status = device_status(dev, running)
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2, sort_keys=True))
        return
    click.echo(
        f"update state {status.fwu_state.value}; running: "
        + (f"slot {running.slot}" + (" (trial)" if running.trial else "") if running else "off")
    )
    for letter, slot in status.slots.items():
        parts = []
        for name, image in slot.components.items():
            if image is None:
                parts.append(f"{name}: empty")
            elif image.verified:
                parts.append(f"{name}: {image.version} (counter {image.security_counter})")
            else:
                parts.append(f"{name}: does not verify ({image.check})")
        click.echo(
            f"slot {letter}: {slot.label:10} priority {slot.state.priority:2} "
            f"tries {slot.state.tries}  " + "; ".join(parts)
        )
    for name, fuse in status.counters.items():
        click.echo(
            f"security counter {name}: {fuse.counter} ({fuse.left} of {fuse.capacity} "
            f"left, {fuse.backend})"
        )


@device.command("flash-raw")
@_dir_arg
@click.option("--slot", "letter", type=click.Choice(["a", "b"]), required=True)
@click.option("--component", default="main", show_default=True)
@click.option(
    "--activate",
    is_flag=True,
    help="Also rewrite boot control to mark this slot confirmed and first in line.",
)
@click.argument("image", type=click.Path(dir_okay=False))
def flash_raw(directory: Path, letter: str, component: str, activate: bool, image: str) -> None:
    """ATTACK: write IMAGE straight into a slot with physical access, bypassing install."""
    from otaguard.device.attack import flash_raw
    from otaguard.device.store import open_device

    with open_device(directory) as dev, open_input(image) as source:
        length = source.seek(0, 2)
        source.seek(0)
        flash_raw(dev, letter, component, source, length, point_boot_control=activate)
    click.echo(
        f"wrote {length} bytes into slot {letter} ({component}) without any check"
        + ("; boot control now points at it" if activate else "")
    )


@device.command("learn-crl")
@_dir_arg
@click.argument("crl", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--issuer-chain",
    type=click.Path(dir_okay=False),
    default=None,
    help="Certificates of the CRL's issuer up to (not including) the root.",
)
def learn_crl_cmd(directory: Path, crl: str, issuer_chain: str | None) -> None:
    """Store a revocation list signed by a CA under the device's anchored roots."""
    from otaguard.device.store import learn_crl_file
    from otaguard.pki.store import read_certs

    data = read_bounded(input_path(crl), MAX_KEY_FILE, "CRL")
    chain = read_certs(issuer_chain, "issuer chain") if issuer_chain else []
    held = learn_crl_file(directory, data, chain)
    click.echo(f"CRL learned; the device now holds {held} revocation list(s)")
