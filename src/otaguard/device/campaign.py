"""The fault campaign: cut power before every write, tear every write, then reboot.

A scenario is a list of steps (install, boot, confirm) run on a device that
starts from a known state. It is run once without faults to count its
operations; then, for every operation N and every fault kind (cut before N,
tear N leaving old bytes, tear N leaving noise), it is replayed from the
same start with that fault, and the device is rebooted (without confirming)
until it settles on a confirmed image. After every fault the campaign checks:

* every boot reaches a verified image, and it is the old or the new one
  (never recovery, never a third image, never a mix);
* the fuse counter never decreases and is never above the booted image's;
* the new image is permanent only if confirm's metadata write had landed;
  otherwise it reverts and the fuses equal the old image's counter;
* the device can still be updated: the full update then succeeds.

A failure of any of these is a *brick* in the report (the tests demand 0).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from otaguard.device.bootloader import BootResult, boot
from otaguard.device.faults import FaultPlan, PowerLoss, TearFill
from otaguard.device.install import OTHER, Running, confirm, install, running_of
from otaguard.device.model import MAIN, Device
from otaguard.device.slots import image_id_of

KINDS = ("cut", "tear-old", "tear-random")


@dataclass
class Session:
    """Volatile state of one simulated power-on sequence."""

    running: Running | None = None
    confirm_at: int | None = None  # op number at which confirm started writing


Step = Callable[[Device, Session], None]


def step_install(image: bytes) -> Step:
    def run(device: Device, session: Session) -> None:
        install(device, {MAIN: io.BytesIO(image)}, running=session.running)

    return run


def step_boot(device: Device, session: Session) -> None:
    session.running = None  # a reset: the running firmware is gone
    session.running = running_of(boot(device))


def step_confirm(device: Device, session: Session) -> None:
    session.confirm_at = device.clock.count
    confirm(device, session.running)


def settle(device: Device, session: Session, history: Sequence[bytes]) -> None:
    """Bring a fresh device to 'running the last of ``history``, confirmed'."""
    for image in history:
        for step in (step_install(image), step_boot, step_confirm, step_boot):
            step(device, session)


@dataclass
class CampaignReport:
    scenario: str
    geometry: str
    operations: int = 0
    fault_points: int = 0
    bricks: int = 0
    failures: list[str] = field(default_factory=list)


def _plan(kind: str, op: int, seed: int) -> FaultPlan:
    if kind == "cut":
        return FaultPlan(cut_before=op)
    fill = TearFill.OLD if kind == "tear-old" else TearFill.RANDOM
    return FaultPlan(tear_at=op, fill=fill, seed=seed)


def run_campaign(
    make_device: Callable[[], Device],
    history: Sequence[bytes],
    new: bytes,
    *,
    scenario: str,
    kinds: Sequence[str] = KINDS,
    seed: int = 1,
) -> CampaignReport:
    """Fault every operation of ``scenario`` on a device confirmed on ``history[-1]``.

    Scenarios: ``update`` (install, boot, confirm, boot) and ``crash-loop``
    (install, then boots that never confirm, until the revert).
    """
    device = make_device()
    session = Session()
    settle(device, session, history)
    assert session.running is not None
    case = _Case(device.snapshot(), session.running, new, image_id_of(new), scenario)
    if scenario == "update":
        case.steps = [step_install(new), step_boot, step_confirm, step_boot]
    elif scenario == "crash-loop":
        case.steps = [step_install(new), *[step_boot] * (device.config.trial_tries + 1)]
    else:
        raise ValueError(f"unknown scenario {scenario}")
    device.arm()
    clean = Session(running=case.running)
    for step in case.steps:
        step(device, clean)
    report = CampaignReport(scenario, device.config.geometry.name, operations=device.clock.count)
    for op in range(report.operations):
        for kind in kinds:
            report.fault_points += 1
            device.restore(case.base)
            problem = _one_fault(device, case, _plan(kind, op, seed))
            if problem:
                report.bricks += 1
                if len(report.failures) < 20:
                    report.failures.append(f"{kind} at op {op}: {problem}")
    return report


@dataclass
class _Case:
    base: tuple[bytes, dict[str, object]]
    running: Running
    new: bytes
    new_id: str
    scenario: str
    steps: list[Step] = field(default_factory=list)


def _one_fault(device: Device, case: _Case, plan: FaultPlan) -> str | None:
    old_id = case.running.image_ids[0]
    old_counter = device.otp.counters.value(MAIN)
    session = Session(running=case.running)
    device.arm(plan)
    try:
        for step in case.steps:
            step(device, session)
        return "the fault never fired"
    except PowerLoss:
        pass
    # Permanent is allowed only once confirm's record has landed.
    landed = _confirm_landed(device, case, session)
    counters = device.otp.counters
    if counters.value(MAIN) != old_counter and not landed:
        return "fuses raised without a confirm"
    device.arm()
    result = _settle(device, case, old_id)
    if isinstance(result, str):
        return result
    final = result.images[0]
    if final.image_id == case.new_id and not landed:
        return "a trial image became permanent without confirm"
    if counters.value(MAIN) != final.metadata.security_counter:
        return "fuses do not match the confirmed image"
    if final.image_id == old_id:
        return _can_update(device, running_of(result), case)
    return None


def _settle(device: Device, case: _Case, old_id: str) -> BootResult | str:
    """Boot until the device confirms an image; a broken rule found on the way, as text."""
    counters = device.otp.counters
    seen = counters.value(MAIN)
    result = None
    for _ in range(device.config.trial_tries + 2):
        result = boot(device)
        if result.state == "recovery":
            return f"recovery after the fault: {result.rejected}"
        image = result.images[0]
        if image.image_id not in (old_id, case.new_id):
            return "booted an image that is neither the old nor the new one"
        now = counters.value(MAIN)
        if now < seen:
            return "the fuse counter decreased"
        if now > image.metadata.security_counter:
            return "fuses ahead of the booted image"
        seen = now
        if result.state == "confirmed":
            return result
    return "the device never settled on a confirmed image"


def _confirm_landed(device: Device, case: _Case, session: Session) -> bool:
    """Whether confirm's record is in flash: the newest valid copy marks the new slot successful.

    Op numbers cannot say it ("confirm started + 2 operations"): a torn program whose
    written prefix already holds every byte that differs from the erased value has
    landed just the same, and its record is valid (its CRC says so). Read, not counted.
    """
    if session.confirm_at is None:
        return False
    record = device.bootctl.load()
    return record is not None and record.slot(OTHER[case.running.slot]).successful


def _can_update(device: Device, running: Running | None, case: _Case) -> str | None:
    """After a fault the device must still take the update, start to finish."""
    session = Session(running=running)
    for step in (step_install(case.new), step_boot, step_confirm, step_boot):
        step(device, session)
    if session.running is None or session.running.image_ids[0] != case.new_id:
        return "the update no longer succeeds after the fault"
    return None
