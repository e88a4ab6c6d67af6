"""The compromise drill: the key-management incident plan, executed and checked.

Every step uses the same library calls as the CLI and checks its outcome; a
step that does not turn out as the plan says raises :class:`DrillFailed`. The
"device" here is the pure verifier a device runs: its anchors (root key
hashes and key epoch) and the CRLs it has learned, with time taken from each
image's signing time, as on a device without a reliable clock.

Story (``docs/key-management.md`` describes the real-world procedure):

1. Offline root R1 -> EU intermediate -> signer S1; release 1.0.0 verifies.
2. S1's key leaks. Its certificate is revoked (key-compromise) and the EU CA's
   CRL reaches the device: 1.0.0, and anything the thief signs with S1, even
   backdated, is refused.
3. The release is re-signed under a new signer S2: it verifies.
4. The EU intermediate itself is compromised: the root revokes it; everything
   under it is refused. A new intermediate and signer take over.
5. The root is rotated: R2 is cross-signed by R1, and an anchor rotation
   message signed by R1 moves the device to R2 and key epoch 2. Afterwards a
   chain that ends only in R1 is refused, even though R1's signature is valid.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import OtaguardError, RejectedError
from otaguard.image import ImagePolicy, sign_stream
from otaguard.pki import anchor
from otaguard.pki.constraints import CODE_SIGNING, Constraints
from otaguard.pki.image_trust import verify_image_with_roots
from otaguard.pki.issue import (
    Issuer,
    Revocation,
    build_crl,
    build_intermediate,
    build_root,
    build_signer,
    cross_sign,
    parse_subject,
)

HW = "acme-ecu-v2"
REGION = "eu"
DAY = dt.timedelta(days=1)


class DrillFailed(RuntimeError):
    """A drill step did not end as the incident plan says it must."""


def _new_ca(
    name: str, issuer: Issuer | None, now: dt.datetime, constraints: Constraints | None = None
) -> Issuer:
    signer = KeySigner(generate_private_key(KeyType.ECDSA_P384))
    if issuer is None:
        cert = build_root(
            signer,
            parse_subject(f"CN={name}"),
            not_before=now,
            not_after=now + dt.timedelta(days=365 * 20),
        )
    else:
        assert constraints is not None
        cert = build_intermediate(
            issuer,
            signer.public_key,
            parse_subject(f"CN={name}"),
            constraints,
            not_before=now,
            not_after=now + dt.timedelta(days=365 * 5),
        )
    return Issuer(cert, signer)


def _new_signer(issuer: Issuer, name: str, now: dt.datetime) -> Issuer:
    signer = KeySigner(generate_private_key(KeyType.ED25519))
    cert = build_signer(
        issuer, signer.public_key, name, not_before=now, not_after=now + dt.timedelta(days=90)
    )
    return Issuer(cert, signer)


def _sign(
    signer: Issuer, chain: list[x509.Certificate], version: str, created: dt.datetime
) -> bytes:
    out = io.BytesIO()
    sign_stream(
        io.BytesIO(f"firmware {version}".encode() * 64),
        out,
        [signer.signer],
        version=version,
        security_counter=1,
        hardware_ids=[HW],
        created=int(created.timestamp()),
        cert_chain=[c.public_bytes(Encoding.DER) for c in chain],
    )
    return out.getvalue()


class _Device:
    """The verifier a device runs, with its anchors and learned CRLs."""

    def __init__(self, root: x509.Certificate) -> None:
        self.state = anchor.provision(root)
        self.crls: list[x509.CertificateRevocationList] = []

    def verify(self, image: bytes) -> str:
        verify_image_with_roots(
            io.BytesIO(image),
            self.state.active_roots(),
            policy=ImagePolicy(hardware_id=HW),
            crls=self.crls,
            region=REGION,
        )
        return "accepted"


def _expect_ok(what: str, action: Callable[[], object]) -> str:
    try:
        action()
    except OtaguardError as exc:
        raise DrillFailed(f"{what}: expected acceptance, got: {exc}") from exc
    return f"  ok      {what}: accepted"


def _expect_refused(what: str, check: str, action: Callable[[], object]) -> str:
    try:
        action()
    except RejectedError as exc:
        if exc.check != check:
            raise DrillFailed(f"{what}: refused for {exc.check}, expected {check}") from exc
        return f"  ok      {what}: refused ({exc.check}: {exc})"
    raise DrillFailed(f"{what}: expected a refusal ({check}) but it was accepted")


class _Drill:
    """The cast of the story (CAs, signers, releases, the device) as the steps build it."""

    def __init__(self, out_dir: Path, now: dt.datetime) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.now = now
        self.t0 = now - dt.timedelta(days=30)
        self.eu = Constraints(CODE_SIGNING, frozenset({REGION}), frozenset({HW}))
        self.root1 = _new_ca("Acme Root CA R1", None, self.t0 - dt.timedelta(days=1))
        self.inter = _new_ca("Acme EU Release CA", self.root1, self.t0, self.eu)
        self.s1 = _new_signer(self.inter, "release-2026q4", self.t0)
        self.device = _Device(self.root1.cert)

    def save(self, name: str, data: bytes) -> None:
        (self.out_dir / name).write_bytes(data)

    def revoke(self, ca: Issuer, revocation: Revocation, *, days: int, name: str) -> None:
        """``ca`` publishes a CRL (number 1) with ``revocation``; it reaches the device."""
        crl = build_crl(
            ca, [revocation], this_update=self.now, next_update=self.now + days * DAY, number=1
        )
        self.save(name, crl.public_bytes(Encoding.PEM))
        self.device.crls.append(crl)

    def first_release(self) -> Iterator[str]:
        self.v1 = _sign(self.s1, [self.s1.cert, self.inter.cert], "1.0.0", self.t0 + DAY)
        self.save("release-1.0.0-s1.img", self.v1)
        yield _expect_ok("release 1.0.0 signed by S1", lambda: self.device.verify(self.v1))

    def signer_key_leaks(self) -> Iterator[str]:
        s1, inter, now = self.s1, self.inter, self.now
        leaked = _sign(s1, [s1.cert, inter.cert], "9.9.9", self.t0 + 2 * DAY)  # thief, backdated
        compromise = Revocation(s1.cert.serial_number, now - 3 * DAY, "key-compromise")
        self.revoke(inter, compromise, days=30, name="eu-ca.crl")
        yield _expect_refused(
            "release 1.0.0 signed by S1", "revoked", lambda: self.device.verify(self.v1)
        )
        yield _expect_refused(
            "thief's backdated 9.9.9 signed with S1's key",
            "revoked",
            lambda: self.device.verify(leaked),
        )

    def release_resigned(self) -> Iterator[str]:
        s2 = _new_signer(self.inter, "release-2026q4-b", self.t0 + 25 * DAY)
        self.v1b = _sign(s2, [s2.cert, self.inter.cert], "1.0.0", self.now - DAY)
        self.save("release-1.0.0-s2.img", self.v1b)
        yield _expect_ok("release 1.0.0 re-signed by S2", lambda: self.device.verify(self.v1b))

    def intermediate_compromised(self) -> Iterator[str]:
        now = self.now
        compromise = Revocation(self.inter.cert.serial_number, now, "ca-compromise")
        self.revoke(self.root1, compromise, days=365, name="root-r1.crl")
        yield _expect_refused(
            "release 1.0.0 signed by S2 under the revoked CA",
            "revoked",
            lambda: self.device.verify(self.v1b),
        )
        inter2 = _new_ca("Acme EU Release CA 2", self.root1, now - dt.timedelta(hours=2), self.eu)
        s3 = _new_signer(inter2, "release-2026q4-c", now - dt.timedelta(hours=1))
        self.v1c = _sign(s3, [s3.cert, inter2.cert], "1.0.0", now)
        self.save("release-1.0.0-s3.img", self.v1c)
        yield _expect_ok(
            "release 1.0.0 signed under the new intermediate", lambda: self.device.verify(self.v1c)
        )

    def root_rotation(self) -> Iterator[str]:
        now, device, root1 = self.now, self.device, self.root1
        root2 = _new_ca("Acme Root CA R2", None, now - dt.timedelta(hours=1))
        cross = cross_sign(
            root1, root2.cert, not_before=now - dt.timedelta(hours=1), not_after=now + 1825 * DAY
        )
        inter3 = _new_ca("Acme EU Release CA (R2)", root2, now - dt.timedelta(minutes=50), self.eu)
        s4 = _new_signer(inter3, "release-2027q1", now - dt.timedelta(minutes=40))
        v2 = _sign(s4, [s4.cert, inter3.cert, cross], "2.0.0", now)
        self.save("release-2.0.0-r2.img", v2)
        yield _expect_ok(
            "2.0.0 under R2, on a device still anchored to R1 (via the cross-certificate)",
            lambda: device.verify(v2),
        )
        forged = anchor.make_rotation(root2.signer, root2.cert, 2)
        yield _expect_refused(
            "anchor rotation signed by R2 itself",
            "anchor-rotation",
            lambda: anchor.apply_rotation(device.state, forged),
        )
        message = anchor.make_rotation(root1.signer, root2.cert, 2)
        self.save("anchor-rotation-epoch2.bin", message)
        device.state = anchor.apply_rotation(device.state, message)
        yield f"  ok      device moved to key epoch {device.state.epoch}, anchored to R2"
        yield _expect_refused(
            "replay of the same rotation",
            "anchor-rotation",
            lambda: anchor.apply_rotation(device.state, message),
        )
        yield _expect_ok("2.0.0 under R2 after the rotation", lambda: device.verify(v2))
        yield _expect_refused(
            "release signed under R1 (old epoch)", "chain", lambda: device.verify(self.v1c)
        )


#: The story's steps in order: (title, step). Each step yields one line per checked outcome.
STEPS: tuple[tuple[str, Callable[[_Drill], Iterator[str]]], ...] = (
    ("offline root R1 -> EU intermediate -> signer S1", _Drill.first_release),
    (
        "S1's key leaks; S1 is revoked for key-compromise and the CRL reaches the device",
        _Drill.signer_key_leaks,
    ),
    ("the release is re-signed under a new signer S2", _Drill.release_resigned),
    ("the EU intermediate is compromised; the root revokes it", _Drill.intermediate_compromised),
    (
        "root rotation R1 -> R2 (cross-signed, anchor moved by a message signed by R1)",
        _Drill.root_rotation,
    ),
)
COMPLETE = "drill complete: every step ended as the incident plan requires"


@dataclass(frozen=True)
class DrillStep:
    number: int
    title: str
    results: tuple[str, ...]  # one line per checked outcome, as run_drill prints it


def drill_steps(out_dir: Path, *, now: dt.datetime) -> Iterator[DrillStep]:
    """Run the drill step by step; artefacts are written to ``out_dir``."""
    drill = _Drill(out_dir, now)
    for number, (title, step) in enumerate(STEPS, 1):
        yield DrillStep(number, title, tuple(step(drill)))


def run_drill(out_dir: Path, *, now: dt.datetime) -> Iterator[str]:
    """Run the drill, yielding one line per step and per checked outcome."""
    for step in drill_steps(out_dir, now=now):
        yield f"step {step.number}: {step.title}"
        yield from step.results
    yield COMPLETE


def drill_report(out_dir: str, *, now: dt.datetime) -> dict[str, Any]:
    """Run the drill; every step and its checked outcomes as one report (``--json``).

    ``out_dir`` is reported as given, as the other ``pki`` reports do.
    """
    steps = [
        {"step": step.number, "title": step.title, "results": [r.strip() for r in step.results]}
        for step in drill_steps(Path(out_dir), now=now)
    ]
    return {"out_dir": out_dir, "steps": steps, "complete": True}
