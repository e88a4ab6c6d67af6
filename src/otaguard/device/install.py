"""The update flow on the device: install into the inactive slot, confirm, reject.

``install`` (PSA FWU: WRITING -> CANDIDATE -> STAGED):

1. Verify every image of the set from its file first -- signature, hardware
   id, counter floor, payload kind, and the fuse budget -- so that an image
   the device could never confirm is refused before a single flash write.
2. Mark the target slot unbootable (if it was bootable), so the bootloader
   stops considering it before its first sector is erased.
3. Erase and program each image into the target slot; components not in the
   set are carried over from the other slot, so a slot always holds a set.
4. Verify the whole set again, streaming from flash: what counts is what
   landed, not what was checked before writing.
5. One boot-control write (the commit point) makes the target a trial with
   ``trial_tries`` tries at top priority. Before it, the device boots the old
   set; after it, the new one, on trial.

An install never overwrites an update that is installed and not yet
confirmed (a STAGED set waiting for its first boot, or a trial the device lost
power in) unless the caller passes ``replace_staged=True``: a second install
would otherwise silently discard the first. ``install_update`` is the entry
point for callers holding files (the CLI, the fleet agent): it sends a signed
delta to ``install_delta`` and full images to ``install``.

``confirm`` (TRIAL -> READY, psa_fwu_accept) first marks the running slot
successful, *then* raises the fuses to its counters. In that order a power
cut in between leaves fuses that lag the confirmed image, which the next boot
raises; the other order could leave fuses ahead of every bootable image --
a brick. ``reject`` marks a running trial unbootable (psa_fwu_reject).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from otaguard.device.bootctl import UNBOOTABLE, BootRecord, SlotState
from otaguard.device.bootloader import SECOND, TOP, BootResult, verify_set
from otaguard.device.flash import FlashReader
from otaguard.device.model import MAIN, Device
from otaguard.device.slots import (
    SlotImage,
    Source,
    check_budget,
    device_policy,
    extent_in,
    verify_slot,
    verify_stream_for,
    write_image,
)
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    RejectedError,
    SlotSizeError,
    UsageError,
)
from otaguard.image import PayloadKind
from otaguard.image.envelope_verify import read_protected

OTHER = {"a": "b", "b": "a"}


@dataclass(frozen=True)
class Running:
    """What the bootloader handed to the firmware it started (RAM: lost at power-off)."""

    slot: str
    image_ids: tuple[str, ...]
    trial: bool


def running_of(result: BootResult) -> Running | None:
    """What a boot hands to the firmware it started (None in recovery)."""
    if result.slot is None:
        return None
    return Running(
        result.slot, tuple(i.image_id for i in result.images), trial=result.state == "trial"
    )


class StagedUpdateError(UsageError):
    """The target slot holds an installed, unconfirmed update that the install would discard.

    A usage error (exit 2), not a rejection: nothing is wrong with the new
    image; the request conflicts with the device's state, like installing
    while a trial runs.
    """


@dataclass(frozen=True)
class InstallResult:
    slot: str
    images: tuple[SlotImage, ...]
    tries: int
    flash_ops: int
    #: The unconfirmed update this install overwrote (``replace_staged``), by component;
    #: a version, or None for an image that no longer verified. Empty if none was pending.
    replaced: tuple[tuple[str, str | None], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The install as reported (``device install --json``)."""
        return {
            "power_cut": False,
            "slot": self.slot,
            "tries": self.tries,
            "flash_ops": self.flash_ops,
            "components": {i.component: i.to_json() for i in self.images},
            "replaced_staged": dict(self.replaced) or None,
            **self.images[0].to_json(),
        }


@dataclass(frozen=True)
class ConfirmResult:
    slot: str
    images: tuple[SlotImage, ...]
    already_confirmed: bool
    flash_ops: int


def _load(device: Device) -> BootRecord:
    record = device.bootctl.load()
    if record is None:
        raise UsageError("boot control is unreadable: boot the device first (it rebuilds it)")
    return record


def target_slot(record: BootRecord, running: Running | None) -> str:
    """The slot an install overwrites: never the running one, never the last good one."""
    if running is not None:
        if running.trial:
            raise UsageError(
                f"slot {running.slot} is running on trial: confirm or reject it before installing"
            )
        return OTHER[running.slot]
    good = [s for s in ("a", "b") if record.slot(s).bootable and record.slot(s).successful]
    if good:
        return OTHER[max(good, key=lambda s: record.slot(s).priority)]
    return min(("a", "b"), key=lambda s: (record.slot(s).priority, s))


def _pending_in(
    device: Device, record: BootRecord, target: str, *, replace_staged: bool
) -> tuple[tuple[str, str | None], ...]:
    """The unconfirmed update in ``target`` (component, version), refused unless replaced."""
    state = record.slot(target)
    if not state.is_trial:
        return ()
    pending: list[tuple[str, str | None]] = []
    for name in device.config.names:
        try:
            pending.append(
                (name, verify_slot(device, target, name, for_install=False).metadata.version)
            )
        except RejectedError:
            pending.append((name, None))
    if not replace_staged:
        what = ", ".join(f"{n} {v or '(does not verify)'}" for n, v in pending)
        when = (
            "staged: it has not booted yet"
            if state.tries == device.config.trial_tries
            else f"on trial, {state.tries} boot(s) left"
        )
        raise StagedUpdateError(
            f"slot {target} holds an update that is installed and not yet confirmed "
            f"({what}; {when}): boot and confirm or reject it first, or replace it explicitly"
        )
    return tuple(pending)


def _size(stream: BinaryIO) -> int:
    end = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return end


def install(
    device: Device,
    images: Mapping[str, BinaryIO],
    *,
    running: Running | None = None,
    replace_staged: bool = False,
) -> InstallResult:
    """Install an update set (component name -> seekable image file). See the module doc."""
    if not images:
        raise UsageError("an update set needs at least one image")
    start = device.clock.count
    for name, stream in images.items():  # 1: everything refused up front
        device.config.component(name)
        size = _size(stream)
        if size > device.config.geometry.slot_size:
            raise SlotSizeError(
                f"{name}: the image ({size} bytes) does not fit a "
                f"{device.config.geometry.slot_size}-byte slot"
            )
        verify_stream_for(device, name, stream, for_install=True)
    record = _load(device)
    target = target_slot(record, running)
    replaced = _pending_in(device, record, target, replace_staged=replace_staged)
    sources = {name: (stream, _size(stream)) for name, stream in images.items()}
    return _program_and_commit(device, record, target, sources, start, replaced)


def _program_and_commit(
    device: Device,
    record: BootRecord,
    target: str,
    images: Mapping[str, tuple[Source, int]],
    start: int,
    replaced: tuple[tuple[str, str | None], ...],
) -> InstallResult:
    """Steps 2-5 of ``install``: every check that could refuse the update has passed."""
    layout = device.config.layout
    source = OTHER[target]
    if record.slot(target).bootable:  # 2
        record = device.bootctl.write(record.with_slot(target, UNBOOTABLE))
    for name in device.config.names:  # 3
        region = layout.slot(target, name)
        if name in images:
            stream, size = images[name]
            write_image(device.flash, region, stream, size)
            continue
        src = layout.slot(source, name)
        try:
            length = extent_in(device.flash, src)
        except MalformedError:
            raise UsageError(
                f"component {name} has no image in slot {source} to carry over: "
                "the update set must include it"
            ) from None
        write_image(device.flash, region, FlashReader(device.flash, src.offset, length), length)
    verified = tuple(  # 4
        verify_slot(device, target, name, for_install=name in images)
        for name in device.config.names
    )
    tries = device.config.trial_tries
    record = record.with_slot(target, SlotState(TOP, tries, unbootable=False))  # 5
    if record.slot(source).priority:
        record = record.with_slot(source, replace(record.slot(source), priority=SECOND))
    device.bootctl.write(record)
    return InstallResult(target, verified, tries, device.clock.count - start, replaced)


def install_delta(
    device: Device,
    delta: BinaryIO,
    *,
    component: str = MAIN,
    running: Running | None = None,
    replace_staged: bool = False,
) -> InstallResult:
    """Install the image a signed delta rebuilds from the active slot's image (docs/delta.md).

    Everything that can refuse without writing runs first: the delta's envelope
    (signature, hardware id, counter, kind DELTA), the rebuilt image's own
    signatures and policy, its size, and the base -- the active slot's image,
    hashed whole (reads only). Then the new image streams from the delta into
    the target slot, each chunk checked; the usual verification from flash
    and the single boot-control write follow, exactly as for a full image.
    The active slot is only ever read, so a power cut anywhere is as safe as
    during any install.

    Rerun after a power cut, it resumes from the last verified chunk written
    to the target slot: the chunks found intact there (read back, checked
    against the delta's chunk table) are not decoded again, and every byte,
    kept or new, still goes through the payload digest and the verification
    from flash before the slot can boot.
    """
    from otaguard.delta import open_delta, reconstruct

    start = device.clock.count
    device.config.component(component)
    opened = open_delta(
        delta,
        device.trust.resolver(),
        policy=replace(
            device_policy(device, component, for_install=True),
            allowed_kinds=frozenset({PayloadKind.DELTA}),
        ),
        inner_policy=device_policy(device, component, for_install=True),
    )
    check_budget(device, component, opened.inner)
    length = opened.header.target_length
    if length > device.config.geometry.slot_size:
        raise SlotSizeError(
            f"{component}: the image ({length} bytes) does not fit a "
            f"{device.config.geometry.slot_size}-byte slot"
        )
    record = _load(device)
    target = target_slot(record, running)
    replaced = _pending_in(device, record, target, replace_staged=replace_staged)
    base_region = device.config.layout.slot(OTHER[target], component)
    try:
        base_length = extent_in(device.flash, base_region)
    except MalformedError:
        raise DigestMismatchError(
            f"delta base mismatch: slot {OTHER[target]} holds no image to apply the delta to"
        ) from None

    def read_at(offset: int, n: int) -> bytes:
        n = max(0, min(n, base_length - offset))
        return device.flash.read(base_region.offset + offset, n)

    target_region = device.config.layout.slot(target, component)

    def written(offset: int, n: int) -> bytes:  # what an interrupted run left in the slot
        n = max(0, min(n, target_region.size - offset))
        return device.flash.read(target_region.offset + offset, n)

    # refuses a wrong base before any write
    image = reconstruct(opened, delta, base_length, read_at, written=written)
    return _program_and_commit(
        device, record, target, {component: (image, length)}, start, replaced
    )


def is_delta(stream: BinaryIO) -> bool:
    """Whether the file *claims* to be a signed delta (unverified: it only picks the path).

    Either path verifies everything itself; a file whose header does not parse
    goes to the full-image path, which reports why. The stream is rewound.
    """
    try:
        _signed, meta = read_protected(stream)
    except RejectedError:
        return False
    finally:
        stream.seek(0)
    return meta.payload_kind is PayloadKind.DELTA


def images_by_component(names: tuple[str, ...], args: Sequence[str]) -> dict[str, str]:
    """Which component each image is for: ``NAME=PATH`` for a component of ``names``,
    anything else is a path for the main component.

    Why a refusal: two images for one component would leave it to argument order which
    one is installed.
    """
    out: dict[str, str] = {}
    for arg in args:
        name, sep, path = arg.partition("=")
        if not sep or name not in names:
            name, path = MAIN, arg
        if name in out:
            raise UsageError(f"two images for component {name}")
        out[name] = path
    return out


def install_update(
    device: Device,
    images: Mapping[str, BinaryIO],
    *,
    running: Running | None = None,
    replace_staged: bool = False,
) -> InstallResult:
    """Install what arrived: full images (a set, by component) or one signed delta.

    A delta is installed on its own (its base is the active slot of its
    component); full images go through :func:`install`.
    """
    deltas = [name for name, stream in images.items() if is_delta(stream)]
    if not deltas:
        return install(device, images, running=running, replace_staged=replace_staged)
    if len(images) > 1:
        raise UsageError("a delta is installed on its own, not as part of an update set")
    return install_delta(
        device,
        images[deltas[0]],
        component=deltas[0],
        running=running,
        replace_staged=replace_staged,
    )


def _running_set(
    device: Device, running: Running | None
) -> tuple[BootRecord, tuple[SlotImage, ...]]:
    if running is None:
        raise UsageError("the device is not running any firmware: boot it first")
    record = _load(device)
    images = verify_set(device, running.slot)  # fuses are irreversible: re-verify first
    if tuple(i.image_id for i in images) != running.image_ids:
        raise UsageError(f"slot {running.slot} no longer holds the firmware that booted: reboot")
    return record, images


def confirm(device: Device, running: Running | None) -> ConfirmResult:
    """The running firmware passed its health check: make its slot permanent, raise fuses."""
    start = device.clock.count
    record, images = _running_set(device, running)
    assert running is not None
    state = record.slot(running.slot)
    already = state.successful
    if not already:
        permanent = SlotState(max(state.priority, 1), 0, successful=True, unbootable=False)
        device.bootctl.write(record.with_slot(running.slot, permanent))
    for image in images:
        device.otp.counters.advance_to(image.component, image.metadata.security_counter)
    return ConfirmResult(running.slot, images, already, device.clock.count - start)


def reject(device: Device, running: Running | None) -> str:
    """The running trial failed its health check: never boot it again; returns the slot."""
    record, _images = _running_set(device, running)
    assert running is not None
    if record.slot(running.slot).successful:
        raise UsageError(f"slot {running.slot} is already confirmed: it cannot be rejected")
    device.bootctl.write(record.with_slot(running.slot, UNBOOTABLE))
    return running.slot
