"""Enrolment groups (like Azure DPS) and a device's first contact.

A group names a device CA; any device whose identity certificate chains to it
(``pki issue-device``) is registered on first contact, with the group's hardware
id, region and tags. The first contact proves three things, in this order:

1. the chain validates to the CA of a group (``otaguard.pki.validate``:
   purpose device-identity, clientAuth, at the server's time, the group's CRL)
   -- else 403;
2. the leaf's device id (its CN) is the one the request names -- else 403;
3. the leaf's key signed the request (proof of possession) -- checked by the
   caller before anything is looked up (401).

A device enrolled again with the same certificate gets 200 (its first answer may
have been lost); with another key 409; a revoked device 403.

Audited: ``group.create`` and ``group.crl`` (with the devices the CRL revoked) in
their transactions; ``device.enroll`` on first contact and on a renewed
certificate; a refused first contact (403/409 after the proof of possession) as
``enroll.refuse`` in a transaction of its own, at most
:data:`REFUSALS_PER_MINUTE` per process (anyone can make a key and a chain: the
log must not be a free amplifier), the next recorded one counting those dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from otaguard.audit.entry import AuditEvent
from otaguard.crypto.keys import check_supported, public_key_der
from otaguard.errors import CertificateError, KeyLoadError
from otaguard.pki import constraints as cons
from otaguard.pki.validate import validate_device_identity_chain
from otaguard.server.auth import Operator
from otaguard.server.db import Database
from otaguard.server.errors import ApiError
from otaguard.server.models import Device, Ecu, EnrollmentGroup
from otaguard.server.services import audit
from otaguard.server.services.devices import record_nonce

MAX_CHAIN = 6
MAX_PEM = 64 * 1024
#: devices named in one ``group.crl`` entry (all are counted; each also ``device.revoke``)
MAX_LISTED = 200
REFUSALS_PER_MINUTE = 60


@dataclass(frozen=True)
class GroupInfo:
    id: int
    name: str
    hardware_id: str
    region: str
    tags: dict[str, str]
    ca_sha256: str
    ca_subject: str
    has_crl: bool
    created_at: int


def _info(row: EnrollmentGroup) -> GroupInfo:
    cert = x509.load_pem_x509_certificate(row.ca_pem.encode())
    return GroupInfo(
        row.id,
        row.name,
        row.hardware_id,
        row.region,
        {str(k): str(v) for k, v in row.tags.items()},
        row.ca_sha256,
        cert.subject.rfc4514_string(),
        row.crl_pem is not None,
        row.created_at,
    )


def parse_certs(text: str, what: str) -> list[x509.Certificate]:
    if len(text) > MAX_PEM:
        raise ApiError(422, "invalid-request", f"{what} is over {MAX_PEM} characters")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ApiError(422, "invalid-request", f"{what} holds no PEM certificate") from None
    if len(certs) > MAX_CHAIN:
        raise ApiError(422, "invalid-request", f"{what}: at most {MAX_CHAIN} certificates")
    return certs


def _check_device_ca(cert: x509.Certificate) -> None:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise ApiError(422, "invalid-request", "ca_pem is not a CA certificate")
    try:
        found = cons.of_certificate(cert)
    except Exception:
        raise ApiError(
            422, "invalid-request", "ca_pem has a malformed constraints extension"
        ) from None
    if found is not None and found.purpose != cons.DEVICE_IDENTITY:
        raise ApiError(422, "invalid-request", f"ca_pem is a {found.purpose} CA, not a device CA")


def create_group(
    db: Database,
    *,
    name: str,
    ca_pem: str,
    hardware_id: str,
    region: str,
    tags: dict[str, str],
    now: int,
    by: Operator,
) -> GroupInfo:
    certs = parse_certs(ca_pem, "ca_pem")
    if len(certs) != 1:
        raise ApiError(422, "invalid-request", "ca_pem must hold exactly one certificate")
    _check_device_ca(certs[0])
    der = certs[0].public_bytes(Encoding.DER)
    try:
        with db.writing() as session:
            row = EnrollmentGroup(
                name=name,
                ca_pem=certs[0].public_bytes(Encoding.PEM).decode(),
                ca_sha256=hashlib.sha256(der).hexdigest(),
                hardware_id=hardware_id,
                region=region,
                tags=dict(tags),
                created_at=now,
            )
            session.add(row)
            session.flush()
            info = _info(row)
            details = {
                "ca_sha256": info.ca_sha256,
                "ca_subject": info.ca_subject[:512],
                "hardware_id": hardware_id,
                "region": region,
                "tags": dict(tags),
            }
            audit.record(
                session,
                actor=audit.operator(by),
                action="group.create",
                subject=name,
                details=audit.by_operator(by, details),
                now=now,
            )
            return info
    except IntegrityError:
        raise ApiError(409, "conflict", f"an enrolment group {name!r} exists") from None


def list_groups(db: Database) -> list[GroupInfo]:
    with db.reading() as session:
        return [
            _info(r)
            for r in session.scalars(select(EnrollmentGroup).order_by(EnrollmentGroup.name))
        ]


def set_crl(
    db: Database, name: str, crl_pem: str, *, now: int, by: Operator
) -> tuple[GroupInfo, list[str]]:
    """Record the group CA's CRL; devices whose certificate it lists are revoked at once."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ApiError(422, "invalid-request", "crl_pem is not a PEM CRL") from None
    with db.writing() as session:
        group = session.scalars(
            select(EnrollmentGroup).where(EnrollmentGroup.name == name)
        ).one_or_none()
        if group is None:
            raise ApiError(404, "not-found", f"no enrolment group {name!r}")
        ca = x509.load_pem_x509_certificate(group.ca_pem.encode())
        if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            raise ApiError(422, "revoked", "the CRL is not signed by the group's CA")
        if group.crl_pem is not None:
            old = x509.load_pem_x509_crl(group.crl_pem.encode())
            if _crl_number(crl) <= _crl_number(old):
                raise ApiError(422, "crl-rollback", "the CRL is not newer than the stored one")
        group.crl_pem = crl_pem
        revoked = []
        newly = []
        for device in session.scalars(select(Device).where(Device.group_id == group.id)):
            serial = int(device.cert_serial, 16)
            if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                if device.revoked_at is None:
                    device.revoked_at = now
                    newly.append(device.id)
                revoked.append(device.id)
        session.flush()
        number = str(_crl_number(crl))  # up to 20 octets: a decimal string, not a 64-bit int
        details = {
            "crl_number": number,
            "crl_sha256": hashlib.sha256(crl.public_bytes(Encoding.DER)).hexdigest(),
            "revoked_serials": len(crl),
            "revoked_devices": revoked[:MAX_LISTED],
            "revoked_devices_count": len(revoked),
        }
        actor, time = audit.operator(by), audit.when(now)
        events = [AuditEvent(time, actor, "group.crl", name, audit.by_operator(by, details))]
        revocation = audit.by_operator(by, {"reason": "crl", "group": name, "crl_number": number})
        events += [AuditEvent(time, actor, "device.revoke", d, revocation) for d in newly]
        audit.record_all(session, events)
        return _info(group), revoked


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


# -- first contact -----------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolledDevice:
    device_id: str
    group: GroupInfo
    created: bool


def leaf_device_id(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else None


def leaf_key_der(cert: x509.Certificate) -> bytes:
    try:
        return public_key_der(check_supported(cert.public_key()))
    except KeyLoadError as exc:
        raise ApiError(403, "key-usage", f"device key: {exc}") from None


def _vouching_group(
    session: Session, chain: Sequence[x509.Certificate], at: dt.datetime
) -> EnrollmentGroup:
    """The group whose CA (and CRL) validates ``chain`` at ``at``; 403 if none does."""
    issuers = {c.issuer.rfc4514_string() for c in chain}
    refusal = "no enrolment group's CA vouches for this device"
    check = "chain"
    for group in session.scalars(select(EnrollmentGroup).order_by(EnrollmentGroup.id)):
        ca = x509.load_pem_x509_certificate(group.ca_pem.encode())
        if ca.subject.rfc4514_string() not in issuers:
            continue
        crls = [x509.load_pem_x509_crl(group.crl_pem.encode())] if group.crl_pem else []
        try:
            validate_device_identity_chain(chain, [ca], at=at, crls=crls)
        except CertificateError as exc:
            refusal, check = f"group {group.name}: {exc}", exc.check
            continue
        return group
    raise ApiError(403, check, refusal)


class RefusalBudget:
    """At most ``per_minute`` ``enroll.refuse`` entries per process and minute; the rest
    are counted, and the next entry recorded says how many were dropped."""

    def __init__(self, per_minute: int = REFUSALS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._minute = -1
        self._used = 0
        self._dropped = 0

    def take(self, now: int) -> int | None:
        """None when over budget (counted); else how many were dropped before this one."""
        with self._lock:
            if now // 60 != self._minute:
                self._minute, self._used = now // 60, 0
            if self._used >= self.per_minute:
                self._dropped += 1
                return None
            self._used += 1
            dropped, self._dropped = self._dropped, 0
            return dropped


def _leaf_details(leaf: x509.Certificate) -> dict[str, Any]:
    return {
        "cert_sha256": hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
        "cert_serial": f"{leaf.serial_number:x}",
        "issuer": leaf.issuer.rfc4514_string()[:512],
    }


def enroll(
    db: Database,
    *,
    device_id: str,
    chain: Sequence[x509.Certificate],
    ecus: Sequence[tuple[str, str]],
    nonce: str,
    signed_at: int,
    now: dt.datetime,
    refusals: RefusalBudget,
) -> EnrolledDevice:
    """Register ``device_id`` (its request signature already verified with ``chain[0]``).

    A refusal (403, 409) is recorded as ``enroll.refuse`` before it is answered.
    """
    try:
        return _enroll(
            db,
            device_id=device_id,
            chain=chain,
            ecus=ecus,
            nonce=nonce,
            signed_at=signed_at,
            now=now,
        )
    except ApiError as exc:
        stamp = int(now.timestamp())
        dropped = refusals.take(stamp) if exc.status in (403, 409) else None
        if dropped is not None:
            details = {
                "status": exc.status,
                "check": exc.error,
                "detail": exc.detail[:500],
                **_leaf_details(chain[0]),
            }
            if dropped:
                details["refusals_not_recorded"] = dropped
            with db.writing() as session:
                audit.record_device(session, device_id, "enroll.refuse", details, now=stamp)
        raise


def _enroll(
    db: Database,
    *,
    device_id: str,
    chain: Sequence[x509.Certificate],
    ecus: Sequence[tuple[str, str]],
    nonce: str,
    signed_at: int,
    now: dt.datetime,
) -> EnrolledDevice:
    leaf = chain[0]
    if leaf_device_id(leaf) != device_id:
        raise ApiError(403, "device-id", "the certificate is not for the device the request names")
    key_der = leaf_key_der(leaf)
    cert_sha256 = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    stamp = int(now.timestamp())
    try:
        with db.writing() as session:
            group = _vouching_group(session, chain, now)
            existing = session.get(Device, device_id)
            if existing is not None:
                if existing.revoked_at is not None:
                    raise ApiError(403, "revoked", f"device {device_id} is revoked")
                if existing.public_key_der != key_der:
                    raise ApiError(409, "conflict", f"{device_id} is enrolled with another key")
                record_nonce(session, device_id, nonce, signed_at)
                if existing.cert_sha256 != cert_sha256:  # a renewed certificate, same key
                    existing.cert_sha256 = cert_sha256
                    existing.cert_serial = f"{leaf.serial_number:x}"
                    existing.chain_pem = _pem(chain)
                    _record_enrolment(session, device_id, group, leaf, ecus, stamp, renewed=True)
                return EnrolledDevice(device_id, _info(group), False)
            session.add(
                Device(
                    id=device_id,
                    group_id=group.id,
                    chain_pem=_pem(chain),
                    public_key_der=key_der,
                    cert_sha256=cert_sha256,
                    cert_serial=f"{leaf.serial_number:x}",
                    enrolled_at=stamp,
                    generation=1,
                )
            )
            session.flush()
            for serial, hardware_id in ecus:
                session.add(Ecu(device_id=device_id, serial=serial, hardware_id=hardware_id))
            record_nonce(session, device_id, nonce, signed_at)
            _record_enrolment(session, device_id, group, leaf, ecus, stamp, renewed=False)
            return EnrolledDevice(device_id, _info(group), True)
    except IntegrityError:  # another process enrolled it at the same moment
        raise ApiError(409, "conflict", f"{device_id} was being enrolled concurrently") from None


def _record_enrolment(
    session: Session,
    device_id: str,
    group: EnrollmentGroup,
    leaf: x509.Certificate,
    ecus: Sequence[tuple[str, str]],
    now: int,
    *,
    renewed: bool,
) -> None:
    details = {
        "group": group.name,
        "region": group.region,
        **_leaf_details(leaf),
        "ecus": [{"serial": s, "hardware_id": h} for s, h in ecus],
        "renewed_certificate": renewed,
    }
    audit.record_device(session, device_id, "device.enroll", details, now=now)


def _pem(chain: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in chain)
