"""The check-in: what a device must have installed, as director metadata signed for this request.

An idle check-in (nothing changed for the device) is answered 304 from its ETag
alone: one read of the device row (done by the signature check anyway), no
write (last-seen is batched, ``lastseen.py``), no signing. Otherwise the director
metadata is signed fresh: bound to the device id and the request's nonce, its
version the device's assignment generation (bumped by every assignment, so it
never decreases), listing per ECU the target to have installed -- a delta from
the ECU's installed image when the repository holds one, the full image otherwise.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from tuf.api.metadata import TargetFile

from otaguard.repo.director import EcuInstruction, director_targets, instruction_for
from otaguard.server.db import Database
from otaguard.server.keys import OnlineKeys
from otaguard.server.models import Assignment, Ecu
from otaguard.server.repo_store import RepoVersions, TargetIndex
from otaguard.server.services.devices import DeviceRecord


def etag(
    device: DeviceRecord,
    versions: RepoVersions | None,
    director_keyid: str,
    campaigns: str = "",
    generation: int | None = None,
) -> str:
    """What the answer depends on: assignments, stored state, repository, director key, and
    the running campaigns whose open waves hold the device (``campaign_offer.etag_part``)."""
    snapshot = versions.snapshot if versions else 0
    gen = device.generation if generation is None else generation
    text = f"{gen}|{device.state_hash}|{snapshot}|{director_keyid}"
    if campaigns:
        text += f"|{campaigns}"
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return tag in candidates or "*" in candidates


@dataclass(frozen=True)
class EcuPlan:
    serial: str
    hardware_id: str
    sha256: str | None
    assigned: str


def plan(db: Database, device_id: str) -> list[EcuPlan]:
    with db.reading() as session:
        rows = session.execute(
            select(Ecu, Assignment.target)
            .join(
                Assignment,
                (Assignment.device_id == Ecu.device_id) & (Assignment.ecu_serial == Ecu.serial),
            )
            .where(Ecu.device_id == device_id)
            .order_by(Ecu.serial)
        )
        return [EcuPlan(e.serial, e.hardware_id, e.sha256, target) for e, target in rows]


def choose(index: TargetIndex | None, ecus: Sequence[EcuPlan]) -> list[EcuInstruction]:
    """Per assigned ECU: a delta from what it has, else the full target (grouped by target)."""
    if index is None:
        return []
    chosen: dict[str, tuple[TargetFile, dict[str, str]]] = {}
    for ecu in ecus:
        full = index.targets.get(ecu.assigned)
        if full is None:
            continue  # a release pulled from the repository: nothing to install
        target = full
        if ecu.sha256 and ecu.sha256 != full.hashes.get("sha256"):
            target = index.deltas_to(full, ecu.sha256, ecu.hardware_id) or full
        chosen.setdefault(target.path, (target, {}))[1][ecu.serial] = ecu.hardware_id
    return [instruction_for(target, ecus_of) for target, ecus_of in chosen.values()]


def director_metadata(
    *,
    device: DeviceRecord,
    nonce: str,
    instructions: Sequence[EcuInstruction],
    keys: OnlineKeys,
    now: int,
    expiry: int,
    generation: int | None = None,
) -> str:
    data = director_targets(
        device_id=device.id,
        nonce=nonce,
        instructions=instructions,
        version=device.generation if generation is None else generation,
        expires=dt.datetime.fromtimestamp(now + expiry, dt.UTC).replace(microsecond=0),
        signers=[keys.director],
    )
    return base64.b64encode(data).decode("ascii")
