"""A CA's operations, each whole: issue a certificate into a directory, revoke, publish a CRL.

Why here and not in the CLI: validity windows, default names, where a new key comes
from and what is written where are decisions about the hierarchy; ``otaguard pki``
only parses options and prints, and any other caller (the server, a ceremony script)
makes the same decisions by calling these functions.

Every function takes ``now`` explicitly; certificates start ``SKEW`` before it, so a
verifier whose clock is a little behind accepts them at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import Signer
from otaguard.pki.issue import Issuer, Revocation
from otaguard.pki.store import CaDir, load_ca_dir, write_ca_dir

#: How far before ``now`` a new certificate becomes valid (clock skew of verifiers).
SKEW = dt.timedelta(minutes=5)
_KIND = {"code-signing": "Release", "device-identity": "Device"}


def utc_now() -> dt.datetime:
    """The current time as certificates carry it (UTC, whole seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class NewKey:
    """The key a new certificate certifies, and how its directory stores it."""

    signer: Signer
    #: ``key_pem`` (the key file's bytes) or ``key_uri`` (a PKCS#11 URI without its PIN)
    storage: dict[str, Any] = field(default_factory=dict)


def new_key(spec: str | None, algorithm: KeyType, passphrase: bytes | None) -> NewKey:
    """``spec`` (a key file or PKCS#11 URI), or a fresh key of ``algorithm``.

    A fresh key is stored encrypted under ``passphrase``; a key file is stored as it
    is; an HSM key by its URI, without the PIN.
    """
    from otaguard.crypto.keys import generate_private_key, private_key_pem
    from otaguard.crypto.loader import load_signer, read_key_file
    from otaguard.crypto.pkcs11 import is_pkcs11_uri, parse_pkcs11_uri
    from otaguard.crypto.signer import KeySigner

    if spec is None:
        private = generate_private_key(algorithm)
        return NewKey(KeySigner(private), {"key_pem": private_key_pem(private, passphrase)})
    signer = load_signer(spec, passphrase)
    if is_pkcs11_uri(spec):
        return NewKey(signer, {"key_uri": parse_pkcs11_uri(spec).without_pin()})
    return NewKey(signer, {"key_pem": read_key_file(spec)})


def _valid_for(now: dt.datetime, days: int) -> dict[str, dt.datetime]:
    """The validity window of a certificate made at ``now`` for ``days``."""
    return {"not_before": now - SKEW, "not_after": now + dt.timedelta(days=days)}


def _store_leaf(ca: CaDir, out_dir: Path, cert: x509.Certificate, key: NewKey) -> None:
    """A signer or device directory: its certificate, the CA's chain (no root), its key."""
    write_ca_dir(out_dir, cert, ca.chain_of(cert), is_ca=False, **key.storage)


def open_ca(ca_dir: Path, passphrase: bytes | None) -> tuple[CaDir, Issuer]:
    """A CA directory and its issuer (the key loaded)."""
    ca = load_ca_dir(ca_dir)
    return ca, ca.issuer(passphrase)


def certificate_report(kind: str, cert: x509.Certificate, **where: str) -> dict[str, Any]:
    """A certificate as reported (``--json``), and where it was written (``where``)."""
    return {
        **where,
        "kind": kind,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def constraints_report(
    purpose: str, regions: Sequence[str], hardware_ids: Sequence[str]
) -> dict[str, Any]:
    """An intermediate's constraints as reported (``--json``): None where unconstrained."""
    return {
        "purpose": purpose,
        "regions": sorted(regions) or None,
        "hardware_ids": sorted(hardware_ids) or None,
    }


def revocation_report(ca_dir: str, revocation: Revocation) -> dict[str, Any]:
    """A recorded revocation as reported (``pki revoke --json``); serials in hex."""
    return {
        "ca": ca_dir,
        "serial": f"{revocation.serial:X}",
        "reason": revocation.reason,
        "date": revocation.date.isoformat(),
    }


def init_root(
    out_dir: Path,
    subject: str,
    key: NewKey,
    *,
    years: int,
    path_length: int | None,
    now: dt.datetime,
) -> x509.Certificate:
    """A self-signed root CA in ``out_dir``."""
    from otaguard.pki.issue import build_root, parse_subject

    cert = build_root(
        key.signer,
        parse_subject(subject),
        **_valid_for(now, 365 * years),
        path_length=path_length,
    )
    write_ca_dir(out_dir, cert, [cert], **key.storage)
    return cert


def intermediate_name(subject: str | None, regions: Sequence[str], purpose: str) -> str:
    """``subject``, or by default ``CN=<regions> <Release|Device> CA``."""
    return subject or f"CN={'/'.join(regions) or 'Global'} {_KIND[purpose]} CA"


def issue_intermediate(
    ca: CaDir,
    issuer: Issuer,
    out_dir: Path,
    key: NewKey,
    *,
    subject: str | None,
    regions: Sequence[str],
    hardware_ids: Sequence[str],
    purpose: str,
    years: int | None,
    path_length: int,
    now: dt.datetime,
) -> x509.Certificate:
    """An intermediate CA in ``out_dir``; ``years`` defaults to 5 (code signing) or 15."""
    from otaguard.pki.constraints import Constraints
    from otaguard.pki.issue import build_intermediate, parse_subject

    years = years or (5 if purpose == "code-signing" else 15)
    constraints = Constraints(purpose, frozenset(regions) or None, frozenset(hardware_ids) or None)
    cert = build_intermediate(
        issuer,
        key.signer.public_key,
        parse_subject(intermediate_name(subject, regions, purpose)),
        constraints,
        **_valid_for(now, 365 * years),
        path_length=path_length,
    )
    write_ca_dir(out_dir, cert, ca.chain_of(cert), **key.storage)
    return cert


def issue_signer(
    ca: CaDir,
    issuer: Issuer,
    out_dir: Path,
    key: NewKey,
    *,
    name: str,
    regions: Sequence[str],
    hardware_ids: Sequence[str],
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """A short-lived code-signing certificate (and its key) in ``out_dir``."""
    from otaguard.pki.issue import build_signer

    cert = build_signer(
        issuer,
        key.signer.public_key,
        name,
        **_valid_for(now, days),
        regions=tuple(regions),
        hardware_ids=tuple(hardware_ids),
    )
    _store_leaf(ca, out_dir, cert, key)
    return cert


def issue_device(
    ca: CaDir,
    issuer: Issuer,
    out_dir: Path,
    key: NewKey,
    *,
    device_id: str,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """A device identity certificate (and its key) in ``out_dir``."""
    from otaguard.pki.issue import build_device

    cert = build_device(
        issuer,
        key.signer.public_key,
        device_id,
        **_valid_for(now, days),
    )
    _store_leaf(ca, out_dir, cert, key)
    return cert


def revoke(ca_dir: Path, serial: str, reason: str, *, now: dt.datetime) -> Revocation:
    """Record the revocation of ``serial`` (hex; checked: RFC 5280's range) in the CA's state."""
    from otaguard.pki.serial import parse_serial
    from otaguard.pki.store import record_revocation

    number = parse_serial(serial)
    revocation = Revocation(number, now, reason)
    record_revocation(load_ca_dir(ca_dir), revocation)
    return revocation


@dataclass(frozen=True)
class CrlWritten:
    revoked: list[Revocation]
    number: int
    this_update: dt.datetime
    next_update: dt.datetime

    def to_json(self, ca_dir: str, out: str) -> dict[str, Any]:
        """The CRL as reported (``pki crl --json``): revoked serials in hex."""
        return {
            "ca": ca_dir,
            "out": out,
            "revoked": [f"{r.serial:X}" for r in self.revoked],
            "crl_number": self.number,
            "this_update": self.this_update.isoformat(),
            "next_update": self.next_update.isoformat(),
        }


def write_crl(
    ca_dir: Path, passphrase: bytes | None, out: str, *, days: int, now: dt.datetime
) -> CrlWritten:
    """Sign the CA's CRL (the next CRL number, reserved first) and write it to ``out`` (PEM).

    ``out`` is checked before the number is spent; it is written atomically, or to
    stdout for ``-``.
    """
    from otaguard._atomic import check_output
    from otaguard._stdio import STDIO, write_output
    from otaguard.pki.issue import build_crl
    from otaguard.pki.store import next_crl_number, revocations

    if out != STDIO:
        check_output(out, inputs=[str(ca_dir)])  # before the CRL number is spent
    ca, issuer = open_ca(ca_dir, passphrase)
    revoked = revocations(ca)
    number = next_crl_number(ca)
    next_update = now + dt.timedelta(days=days)
    signed = build_crl(issuer, revoked, this_update=now, next_update=next_update, number=number)
    write_output(out, signed.public_bytes(Encoding.PEM), inputs=[str(ca_dir)])
    return CrlWritten(revoked, number, now, next_update)


def cross_sign_root(
    ca_dir: Path,
    passphrase: bytes | None,
    new_root: Path,
    out: str,
    *,
    years: int,
    now: dt.datetime,
) -> tuple[x509.Certificate, x509.Certificate]:
    """Certify ``new_root`` with the old root at ``ca_dir``; (the cross-certificate, new root)."""
    from otaguard._stdio import write_output
    from otaguard.pki.issue import cross_sign
    from otaguard.pki.store import pem

    _, issuer = open_ca(ca_dir, passphrase)
    new = load_ca_dir(new_root)
    cert = cross_sign(issuer, new.cert, **_valid_for(now, 365 * years))
    write_output(out, pem([cert]), inputs=[str(ca_dir), str(new_root)])
    return cert, new.cert


def write_rotation(
    ca_dir: Path, passphrase: bytes | None, new_root: Path, epoch: int, out: str
) -> x509.Certificate:
    """The anchor rotation message to ``new_root`` at ``epoch``, signed by the old root."""
    from otaguard._stdio import write_output
    from otaguard.pki.anchor import make_rotation

    _, issuer = open_ca(ca_dir, passphrase)
    new = load_ca_dir(new_root)
    message = make_rotation(issuer.signer, new.cert, epoch)
    write_output(out, message, inputs=[str(ca_dir), str(new_root)], binary=True)
    return new.cert
