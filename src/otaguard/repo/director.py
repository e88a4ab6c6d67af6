"""The director (Uptane-style): per-vehicle instructions, signed fresh at every check-in.

The image repository (TUF) says which images exist and are genuine; the
director says which of them *this* vehicle must install on *which* ECU. Its
metadata is a TUF ``targets`` document signed with the director's online
keys, listing per image the ECUs (serial -> hardware id) it is meant for, with
the vehicle id and the nonce of the check-in, so that the vehicle can tell a
fresh answer from a replayed one. A compromised director alone cannot install
anything: the vehicle cross-checks every instruction against the image
repository (``uptane.py``).

This module is pure: instructions, keys and time in, signed bytes out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuf.api.metadata import Key, Metadata, Role, Root, TargetFile, Targets
from tuf.api.serialization.json import JSONSerializer

from otaguard.crypto.signer import Signer
from otaguard.errors import UsageError
from otaguard.repo.signing import RepoSigner, tuf_key

#: The field of the director's targets metadata that binds it to one check-in.
DIRECTOR_FIELD = "x-otaguard-director"
MAX_INSTRUCTIONS = 256
MAX_ECUS_PER_IMAGE = 64


@dataclass(frozen=True)
class EcuInstruction:
    """Install image ``target`` (as named in the image repository) on these ECUs."""

    target: str
    length: int
    hashes: Mapping[str, str]
    ecus: Mapping[str, str]  # ECU serial -> hardware id
    security_counter: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


def director_root(
    signers: Sequence[Signer], *, threshold: int, version: int, expires: dt.datetime
) -> bytes:
    """The director's root: its targets keys and threshold, signed by the same keys.

    Vehicles are provisioned with it at the factory; rotating it is a new root
    version signed by the old keys (as for any TUF root).
    """
    if not 1 <= threshold <= len(signers):
        raise UsageError(f"director threshold must be between 1 and {len(signers)}")
    keys: dict[str, Key] = {}
    for signer in signers:
        key = tuf_key(signer.public_key)
        keys[key.keyid] = key
    ids = list(keys)
    roles = {name: Role(ids, threshold) for name in ("root", "targets", "snapshot", "timestamp")}
    root = Root(version=version, expires=expires, keys=keys, roles=roles)
    return _signed(Metadata(root), signers)


def director_targets(
    *,
    device_id: str,
    nonce: str,
    instructions: Sequence[EcuInstruction],
    version: int,
    expires: dt.datetime,
    signers: Sequence[Signer],
) -> bytes:
    """The instructions of one check-in, bound to the vehicle and its nonce."""
    if len(instructions) > MAX_INSTRUCTIONS:
        raise UsageError(f"at most {MAX_INSTRUCTIONS} images per vehicle and check-in")
    if not device_id or not nonce:
        raise UsageError("director metadata needs the device id and the check-in nonce")
    targets = Targets(version=version, expires=expires)
    for item in instructions:
        if not item.ecus or len(item.ecus) > MAX_ECUS_PER_IMAGE:
            raise UsageError(f"{item.target}: name 1 to {MAX_ECUS_PER_IMAGE} ECUs")
        custom: dict[str, object] = {"ecus": dict(item.ecus), **item.extra}
        if item.security_counter is not None:
            custom["security_counter"] = item.security_counter
        targets.targets[item.target] = TargetFile(
            item.length, dict(item.hashes), item.target, {"custom": custom}
        )
    targets.unrecognized_fields[DIRECTOR_FIELD] = {"device_id": device_id, "nonce": nonce}
    return _signed(Metadata(targets), signers)


def instruction_for(target: TargetFile, ecus: Mapping[str, str]) -> EcuInstruction:
    """An instruction copying what the image repository says about ``target``."""
    counter = target.custom.get("security_counter")
    return EcuInstruction(
        target=target.path,
        length=target.length,
        hashes=dict(target.hashes),
        ecus=dict(ecus),
        security_counter=counter if isinstance(counter, int) else None,
    )


def _signed(metadata: Metadata[Root] | Metadata[Targets], signers: Sequence[Signer]) -> bytes:
    for signer in signers:
        metadata.sign(RepoSigner(signer), append=True)
    return metadata.to_bytes(JSONSerializer(compact=True))
