"""One check-in of a vehicle: verify the director's instructions, download, install.

Order matters for safety:

1. The image repository is refreshed through the TUF client (freshness,
   rollback, mix-and-match, endless data, slow retrieval are its job).
2. The director's metadata is verified and cross-checked against it
   (``repo.uptane``): nothing is downloaded for an instruction that fails.
3. Targets are downloaded by the TUF client, which checks length and hashes.
4. Only then is the device touched: ``device.install`` verifies each image
   again against the OTP anchors and the fuses before the slot can boot.

A failure at any step leaves the device's flash untouched (steps 1-3) or the
running slot untouched (step 4: the install writes only the inactive slot).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Root

from otaguard.device.install import InstallResult, Running, install
from otaguard.device.model import Device
from otaguard.errors import RepositoryRejectedError, UsageError
from otaguard.repo.client import TufClient
from otaguard.repo.uptane import Instruction, Vehicle, cross_check, verify_director


@dataclass(frozen=True)
class CheckIn:
    """What the vehicle sends and must find echoed: its identity and a fresh nonce."""

    vehicle: Vehicle
    nonce: str
    now: dt.datetime
    last_director_version: int = 0


@dataclass(frozen=True)
class Plan:
    """Verified instructions for this device, by component name."""

    director_version: int
    by_component: Mapping[str, Instruction]


def plan_update(
    client: TufClient,
    director_metadata: bytes,
    director_root: Root,
    check_in: CheckIn,
    components: Mapping[str, str],
) -> Plan:
    """Steps 1-2. ``components`` maps this device's ECU serials to its component names."""
    with _repository_step("refresh"):
        client.refresh()
    targets = verify_director(
        director_metadata,
        director_root,
        check_in.vehicle,
        nonce=check_in.nonce,
        now=check_in.now,
        last_version=check_in.last_director_version,
    )
    with _repository_step("target lookup"):
        instructions = cross_check(targets, check_in.vehicle, client.target_info)
    mine = {components[i.ecu_serial]: i for i in instructions if i.ecu_serial in components}
    return Plan(targets.version, mine)


def apply_plan(
    plan: Plan,
    client: TufClient,
    device: Device,
    *,
    target_base_url: str,
    download_dir: str | os.PathLike[str],
    running: Running | None,
) -> InstallResult | None:
    """Steps 3-4: download every image of the plan, then install them as one set."""
    if not plan.by_component:
        return None
    unknown = set(plan.by_component) - set(device.config.names)
    if unknown:
        raise UsageError(f"the plan names components this device lacks: {sorted(unknown)}")
    with _repository_step("download"):
        paths = {
            name: client.download_target(item.target, target_base_url, download_dir)
            for name, item in plan.by_component.items()
        }
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(path, "rb")) for name, path in paths.items()}
        return install(device, files, running=running)


@contextlib.contextmanager
def _repository_step(step: str) -> Iterator[None]:
    """The trust engine's refusals become one otaguard rejection naming the step.

    The client's and the fetcher's own errors are otaguard errors already and pass
    unchanged: a refusal (a cap, a rotation limit) stays a rejection with its check,
    and a network failure stays a :class:`~otaguard.errors.TransportError` (retry
    later), never reported as an attack.
    """
    try:
        yield
    except tuf_exceptions.RepositoryError as exc:
        raise RepositoryRejectedError(f"image repository {step}: {exc}") from exc
