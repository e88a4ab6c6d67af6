"""Multi-component update sets and their PSA Firmware Update states.

An update set (say application + radio firmware) is installed, accepted or
rejected as one, because the two halves of a set are only tested together:
running a new application against an old radio is a configuration nobody
signed off. The A/B design gives this for free when every component lives in
both slot letters and one boot-control record chooses the letter: install
writes and verifies all components of the inactive letter and commits them
with a single record write; verification of a letter at boot fails if any
component fails; confirm accepts the letter; a revert reverts the letter.

The PSA Firmware Update API (ARM IHI 0093) names the states a component goes
through; this module maps the boot-control record onto them:

=========  ==============================================================
READY      running a confirmed set, nothing pending (psa_fwu: READY)
WRITING    install is streaming images into the inactive slot (transient)
CANDIDATE  all images written and verified in flash, not yet committed
STAGED     committed as a trial, waiting for the reboot that will try it
TRIAL      the set has booted and awaits accept (confirm) or reject
REJECTED   the trial was rejected or ran out of tries: the next boot reverts
FAILED     no slot holds a verified set (recovery)
=========  ==============================================================

WRITING and CANDIDATE exist only inside one ``install`` call: a power cut
there leaves the target slot unbootable, i.e. READY on the old set, which is
what PSA specifies for an interrupted write.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from otaguard.device.bootctl import BootRecord, SlotState
from otaguard.device.geometry import SLOTS
from otaguard.device.install import InstallResult, Running, install
from otaguard.device.model import Device


class FwuState(enum.Enum):
    READY = "READY"
    WRITING = "WRITING"
    CANDIDATE = "CANDIDATE"
    STAGED = "STAGED"
    TRIAL = "TRIAL"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


def slot_label(state: SlotState) -> str:
    """A slot's state in words (the diagram in docs/device.md uses the same names)."""
    if state.unbootable or state.priority == 0:
        return "unbootable"
    if state.successful:
        return "confirmed"
    return "trial" if state.tries else "exhausted"


def fwu_state(record: BootRecord | None, trial_tries: int, running: Running | None) -> FwuState:
    if record is None:
        return FwuState.FAILED
    live = [s for s in SLOTS if record.slot(s).priority > 0 and not record.slot(s).unbootable]
    if running is not None and record.slot(running.slot).unbootable:
        return FwuState.REJECTED  # rejected while running: the next boot reverts
    if not live:
        return FwuState.FAILED
    top = max(live, key=lambda s: record.slot(s).priority)
    state = record.slot(top)
    if state.successful:
        return FwuState.READY
    if running is not None and running.slot == top:
        return FwuState.TRIAL
    if state.tries == trial_tries:
        return FwuState.STAGED
    return FwuState.TRIAL if state.tries else FwuState.REJECTED


@dataclass(frozen=True)
class UpdateSet:
    """Images for some or all components; components left out keep their current image."""

    images: Mapping[str, BinaryIO]

    def install(self, device: Device, *, running: Running | None = None) -> InstallResult:
        return install(device, self.images, running=running)
