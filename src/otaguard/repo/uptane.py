"""The vehicle's side of the director: verify its instructions, cross-check them, report back.

Checks, in order (each failure is a :class:`RejectedError` naming its check):

1. Director metadata parses (``malformed``), is a ``targets`` document signed
   by the threshold of the director's targets keys in the vehicle's trusted
   director root (``signature``/``threshold``), has not expired (``freeze``),
   is not older than the last accepted one (``rollback``), and names this
   vehicle and echoes this check-in's nonce (``replay``): an attacker cannot
   replay yesterday's instructions or another vehicle's.
2. Every instruction is for an ECU this vehicle has (``unknown-ecu``) with the
   hardware id the vehicle knows it by (``hardware-id``).
3. Every image named by the director is in the *verified* image repository
   (``director-only``: a compromised director alone installs nothing), with
   the same length, the same hashes for every algorithm both name and at
   least one in common, the same security counter, and lists the ECU's
   hardware id (``mismatch``, ``hardware-id``).
4. An image that the image repository says belongs to an update set
   (custom ``requires``) comes with every other member of the set
   (``partial-bundle``): one ECU of a set missing is refused as a whole.

The image repository's metadata must already have been verified by the TUF
trust engine (``repo.trust``); this module receives its verdicts as
``TargetFile`` lookups and does no I/O.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization import DeserializationError

from otaguard.crypto.keys import PublicKey, key_id
from otaguard.crypto.schemes import scheme_for_key, verify_signature
from otaguard.crypto.signer import Signer
from otaguard.errors import (
    DirectorOnlyError,
    FreezeError,
    HardwareIdError,
    MalformedError,
    MetadataRollbackError,
    MismatchError,
    PartialBundleError,
    ReplayError,
    SignatureError,
    UnknownEcuError,
)
from otaguard.repo.director import DIRECTOR_FIELD, MAX_ECUS_PER_IMAGE, MAX_INSTRUCTIONS

MAX_DIRECTOR_BYTES = 1 << 20
MAX_REPORT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Vehicle:
    """What the vehicle knows about itself (from its own secure configuration)."""

    device_id: str
    ecus: Mapping[str, str]  # ECU serial -> hardware id


@dataclass(frozen=True)
class Instruction:
    """A verified, cross-checked instruction: install ``target`` on ``ecu_serial``."""

    ecu_serial: str
    hardware_id: str
    target: TargetFile  # as the image repository describes it


_Signed = TypeVar("_Signed", Root, Targets)


def _parse(data: bytes, kind: type[_Signed], what: str) -> Metadata[_Signed]:
    """Metadata of exactly ``kind`` (a targets file offered as root is malformed, not root)."""
    try:
        metadata = Metadata[kind].from_bytes(data)  # type: ignore[valid-type]
    except DeserializationError as exc:
        raise MalformedError(f"{what}: {exc}") from exc
    if not isinstance(metadata.signed, kind):
        raise MalformedError(f"{what} is not {kind.type} metadata")
    return metadata


def _signed_by(metadata: Metadata[Any], delegator: Root, what: str) -> None:
    """``delegator``'s threshold of keys for the role has signed ``metadata``."""
    try:
        delegator.verify_delegate(metadata.signed.type, metadata.signed_bytes, metadata.signatures)
    except tuf_exceptions.UnsignedMetadataError as exc:
        raise SignatureError(f"{what}: {exc}") from exc


def load_director_root(data: bytes) -> Root:
    """The vehicle's trusted director root (provisioned at the factory)."""
    metadata = _parse(data, Root, "director root")
    _signed_by(metadata, metadata.signed, "director root is not signed by its own keys")
    return metadata.signed


def verify_director(
    data: bytes,
    root: Root,
    vehicle: Vehicle,
    *,
    nonce: str,
    now: dt.datetime,
    last_version: int = 0,
) -> Targets:
    """Step 1: the director's targets metadata for this check-in."""
    if len(data) > MAX_DIRECTOR_BYTES:
        raise MalformedError(f"director metadata larger than {MAX_DIRECTOR_BYTES} bytes")
    metadata = _parse(data, Targets, "director metadata")
    _signed_by(metadata, root, "director metadata")
    targets = metadata.signed
    if targets.is_expired(now):
        raise FreezeError(f"director metadata expired at {targets.expires.isoformat()}")
    if targets.version < last_version:
        raise MetadataRollbackError(
            f"director metadata version {targets.version} is older than {last_version}"
        )
    binding = targets.unrecognized_fields.get(DIRECTOR_FIELD)
    if not isinstance(binding, dict):
        raise ReplayError("director metadata is not bound to a vehicle and a nonce")
    if binding.get("device_id") != vehicle.device_id:
        raise ReplayError("director metadata is for another vehicle")
    echoed = binding.get("nonce")
    if not isinstance(echoed, str) or not hmac.compare_digest(echoed, nonce):
        raise ReplayError("director metadata does not echo this check-in's nonce (replay)")
    if len(targets.targets) > MAX_INSTRUCTIONS:
        raise MalformedError(f"more than {MAX_INSTRUCTIONS} images in director metadata")
    return targets


def _ecus_of(name: str, target: TargetFile) -> dict[str, str]:
    ecus = target.custom.get("ecus")
    if (
        not isinstance(ecus, dict)
        or not ecus
        or len(ecus) > MAX_ECUS_PER_IMAGE
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in ecus.items())
    ):
        raise MalformedError(f"director entry {name} names no valid ECUs")
    return ecus


def _same_image(name: str, director: TargetFile, image: TargetFile) -> None:
    if director.length != image.length:
        raise MismatchError(
            f"{name}: director says {director.length} bytes, image repository {image.length}"
        )
    common = set(director.hashes) & set(image.hashes)
    if not common:
        raise MismatchError(f"{name}: director and image repository share no hash algorithm")
    for algorithm in sorted(set(director.hashes) | set(image.hashes)):
        if algorithm in common and not hmac.compare_digest(
            director.hashes[algorithm], image.hashes[algorithm]
        ):
            raise MismatchError(
                f"{name}: {algorithm} differs between director and image repository"
            )
    d_counter = director.custom.get("security_counter")
    i_counter = image.custom.get("security_counter")
    if d_counter is not None and d_counter != i_counter:
        raise MismatchError(
            f"{name}: security counter {d_counter} (director) vs {i_counter} (image repository)"
        )


def cross_check(
    director: Targets,
    vehicle: Vehicle,
    image_target: Callable[[str], TargetFile | None],
) -> list[Instruction]:
    """Steps 2-4: the instructions to carry out, or a rejection of the whole set."""
    instructions: list[Instruction] = []
    for name, entry in sorted(director.targets.items()):
        ecus = _ecus_of(name, entry)
        image = image_target(name)
        if image is None:
            raise DirectorOnlyError(
                f"{name} is named by the director only, not by the image repository"
            )
        _same_image(name, entry, image)
        allowed = image.custom.get("hardware_ids")
        for serial, hardware_id in sorted(ecus.items()):
            known = vehicle.ecus.get(serial)
            if known is None:
                raise UnknownEcuError(f"{name}: this vehicle has no ECU {serial}")
            if known != hardware_id:
                raise HardwareIdError(f"{name}: ECU {serial} is {known}, not {hardware_id}")
            if not isinstance(allowed, list) or hardware_id not in allowed:
                raise HardwareIdError(
                    f"{name}: the image repository does not list hardware id {hardware_id}"
                )
            instructions.append(Instruction(serial, hardware_id, image))
    named = set(director.targets)
    for instruction in instructions:
        requires = instruction.target.custom.get("requires", [])
        if not isinstance(requires, list):
            raise MalformedError(f"{instruction.target.path}: 'requires' is not a list")
        missing = sorted(str(r) for r in requires if r not in named)
        if missing:
            raise PartialBundleError(
                f"{instruction.target.path} is part of a set; missing: {', '.join(missing)}"
            )
    return instructions


# --- ECU version reports -------------------------------------------------------------


@dataclass(frozen=True)
class VersionReport:
    ecu_serial: str
    installed: str
    hashes: Mapping[str, str]
    attacks_detected: str
    nonce: str
    signed_by: str


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make_version_report(
    *,
    ecu_serial: str,
    installed: str,
    hashes: Mapping[str, str],
    attacks_detected: str,
    nonce: str,
    signer: Signer,
) -> bytes:
    """What the ECU tells the director at check-in, signed by the ECU's own key."""
    signed = {
        "ecu_serial": ecu_serial,
        "installed": installed,
        "hashes": dict(hashes),
        "attacks_detected": attacks_detected,
        "nonce": nonce,
    }
    signature = signer.sign(_canonical(signed))
    return _canonical(
        {
            "signed": signed,
            "signatures": [{"keyid": key_id(signer.public_key), "sig": signature.hex()}],
        }
    )


def verify_version_report(data: bytes, ecu_key: PublicKey, *, nonce: str) -> VersionReport:
    """The director's check of a report: the ECU's key signed it, for this nonce."""
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedError(f"version report larger than {MAX_REPORT_BYTES} bytes")
    try:
        document = json.loads(data)
        signed = document["signed"]
        signatures = document["signatures"]
        fields = {k: signed[k] for k in ("ecu_serial", "installed", "attacks_detected", "nonce")}
        hashes = signed["hashes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedError("version report is not a valid report") from exc
    if not all(isinstance(v, str) for v in fields.values()) or not isinstance(hashes, dict):
        raise MalformedError("version report fields have the wrong types")
    if not isinstance(signatures, list) or len(signatures) > 8:
        raise MalformedError("version report signatures are malformed")
    wanted = key_id(ecu_key)
    entries: Sequence[object] = signatures
    sig_hex = next(
        (
            e.get("sig")
            for e in entries
            if isinstance(e, dict) and e.get("keyid") == wanted and isinstance(e.get("sig"), str)
        ),
        None,
    )
    if sig_hex is None:
        raise SignatureError("version report is not signed by this ECU's key")
    try:
        signature = bytes.fromhex(sig_hex)
    except ValueError as exc:
        raise MalformedError("version report signature is not hex") from exc
    verify_signature(ecu_key, scheme_for_key(ecu_key), _canonical(signed), signature)
    if not hmac.compare_digest(fields["nonce"], nonce):
        raise ReplayError("version report does not carry this check-in's nonce (replay)")
    return VersionReport(
        fields["ecu_serial"],
        fields["installed"],
        {str(k): str(v) for k, v in hashes.items()},
        fields["attacks_detected"],
        fields["nonce"],
        wanted,
    )
