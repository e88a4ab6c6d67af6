"""Path validation for code-signing chains: pure, over explicit roots, CRLs and time.

The chains are short and of one fixed profile (root -> intermediate(s) ->
signer), so we validate them ourselves instead of through a TLS-oriented
library profile, and test every rejection. Steps, in order:

1. Path building: from the leaf, each certificate must be directly issued
   (issuer name and signature) by the next one from the image's chain, until
   one is directly issued by a trusted root (``chain``). At most 6 links.
2. Extensions: unknown critical extensions are refused; CAs must have
   basicConstraints ca=true and keyCertSign; every CA's pathLen must allow
   the CAs below it (``path-length``); the leaf must be an end entity with
   digitalSignature and the codeSigning extended key usage (``key-usage``).
3. Time (``validity``): every certificate, root included, must be valid at
   the given time. For images that is the image's *signing time* (its CREATED
   field), not the verifier's clock: devices have no reliable clock, and an
   image must keep booting after its short-lived signer certificate expires.
   Backdating by a thief is answered by revocation, below.
4. Revocation (``revoked``): for each non-root certificate, a CRL signed by
   its issuer (if one is given) is consulted. A certificate revoked for
   key-compromise, ca-compromise or an unspecified reason is refused for every
   image, whatever its signing time (the key may be in other hands). A
   certificate revoked for an administrative reason (superseded, cessation of
   operation, affiliation changed) still validates images signed *before* its
   revocation date. A CRL that names an issuer in the path but is not signed by
   it is a rejection, not something to skip.
5. Constraints (``constraint``): the otaguard constraints of every CA and of the
   leaf intersect; all must be code-signing purpose.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from otaguard.errors import (
    CertificateValidityError,
    ChainError,
    ConstraintError,
    KeyUsageError,
    MalformedError,
    PathLengthError,
    RevokedError,
)
from otaguard.pki import constraints as cons

MAX_PATH = 6
_KNOWN_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.NAME_CONSTRAINTS,
}
_ANY_TIME_REASONS = {
    None,
    x509.ReasonFlags.unspecified,
    x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.aa_compromise,
    x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class ValidatedChain:
    """A chain that passed every step; ``path`` runs from the leaf to the root."""

    path: tuple[x509.Certificate, ...]
    regions: frozenset[str] | None
    hardware_ids: frozenset[str] | None

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def root(self) -> x509.Certificate:
        return self.path[-1]


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def build_path(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Step 1: leaf first, trusted root last."""
    if not chain:
        raise ChainError("the image carries no certificate chain")
    if not roots:
        raise ValueError("path validation needs at least one trusted root")
    path = [chain[0]]
    pool = list(chain[1:])
    while len(path) <= MAX_PATH:
        current = path[-1]
        for root in roots:
            if _issued_by(current, root):
                if current.fingerprint(_sha256()) != root.fingerprint(_sha256()):
                    path.append(root)
                return tuple(path)
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None:
            raise ChainError(f"{_name(current)} does not chain to a trusted root")
        pool.remove(parent)
        path.append(parent)
    raise ChainError("certificate chain too long")


def _sha256() -> hashes.HashAlgorithm:
    return hashes.SHA256()


def _check_extensions(
    path: tuple[x509.Certificate, ...],
    leaf_usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CODE_SIGNING,
    leaf_kind: str = "code-signing",
) -> None:
    """Step 2 (``leaf_usage``: the extended key usage the leaf must have)."""
    for cert in path:
        for ext in cert.extensions:
            if ext.critical and ext.oid not in _KNOWN_CRITICAL:
                raise ChainError(
                    f"{_name(cert)} has an unknown critical extension {ext.oid.dotted_string}"
                )
    cas_below = 0
    for index, cert in enumerate(path):
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            basic = None
        try:
            usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(
                x509.KeyUsage
            ).value
        except x509.ExtensionNotFound:
            usage = None
        if index == 0:
            if basic is not None and basic.ca:
                raise KeyUsageError(f"{_name(cert)} is a CA, not a {leaf_kind} certificate")
            if usage is None or not usage.digital_signature:
                raise KeyUsageError(f"{_name(cert)} may not make digital signatures")
            try:
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                raise KeyUsageError(
                    f"{_name(cert)} lacks the {leaf_usage._name} key usage"
                ) from None
            if leaf_usage not in eku:
                raise KeyUsageError(f"{_name(cert)} is not a {leaf_kind} certificate")
            continue
        if basic is None or not basic.ca:
            raise KeyUsageError(f"{_name(cert)} signed a certificate but is not a CA")
        if usage is None or not usage.key_cert_sign:
            raise KeyUsageError(f"{_name(cert)} may not sign certificates")
        if basic.path_length is not None and cas_below > basic.path_length:
            raise PathLengthError(
                f"{_name(cert)} allows {basic.path_length} CA(s) below it, found {cas_below}"
            )
        cas_below += 1


def _check_times(path: tuple[x509.Certificate, ...], at: dt.datetime) -> None:
    """Step 3."""
    for cert in path:
        if at < cert.not_valid_before_utc:
            raise CertificateValidityError(
                f"{_name(cert)} was not yet valid at {at:%Y-%m-%d %H:%M:%S} UTC"
            )
        if at > cert.not_valid_after_utc:
            raise CertificateValidityError(
                f"{_name(cert)} had expired at {at:%Y-%m-%d %H:%M:%S} UTC"
            )


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def _same_key_id(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """False only when both name a key identifier and they differ."""
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


def check_revocation(
    path: tuple[x509.Certificate, ...],
    crls: Sequence[x509.CertificateRevocationList],
    at: dt.datetime,
) -> None:
    """Step 4."""
    for child, issuer in itertools.pairwise(path):
        for crl in crls:
            if crl.issuer != issuer.subject or not _same_key_id(crl, issuer):
                continue  # another CA's list (a successor CA may reuse the name)
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise RevokedError(f"a CRL claiming to be from {_name(issuer)} is not signed by it")
            entry = crl.get_revoked_certificate_by_serial_number(child.serial_number)
            if entry is None:
                continue
            reason = _reason(entry)
            label = reason.name if reason else "unspecified"
            if reason in _ANY_TIME_REASONS or at >= entry.revocation_date_utc:
                raise RevokedError(
                    f"{_name(child)} (serial {child.serial_number:x}) was revoked "
                    f"on {entry.revocation_date_utc:%Y-%m-%d} ({label})"
                )


def _intersect(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def validate_code_signing_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ValidatedChain:
    """Steps 1-5; raise a CertificateError subclass naming the failed check."""
    path = build_path(chain, roots)
    _check_extensions(path)
    _check_times(path, at)
    check_revocation(path, crls, at)
    regions: frozenset[str] | None = None
    hardware_ids: frozenset[str] | None = None
    for cert in path:
        try:
            found = cons.of_certificate(cert)
        except MalformedError as exc:
            raise ConstraintError(f"{_name(cert)}: {exc}") from exc
        if found is None:
            continue
        if found.purpose != cons.CODE_SIGNING:
            raise ConstraintError(f"{_name(cert)} is for {found.purpose}, not code signing")
        regions = _intersect(regions, found.regions)
        hardware_ids = _intersect(hardware_ids, found.hardware_ids)
    return ValidatedChain(path, regions, hardware_ids)


def check_image_constraints(
    chain: ValidatedChain, image_hardware_ids: Sequence[str], region: str | None
) -> None:
    """Step 5 applied to an image: its hardware ids and the verifier's region."""
    if chain.hardware_ids is not None:
        outside = sorted(set(image_hardware_ids) - chain.hardware_ids)
        if outside:
            raise ConstraintError(
                f"the signer may not sign for hardware id(s) {', '.join(outside)}"
            )
    if chain.regions is not None:
        if region is None:
            raise ConstraintError(
                f"the signer may only sign for region(s) {', '.join(sorted(chain.regions))}: "
                "give the device's region"
            )
        if region not in chain.regions:
            raise ConstraintError(f"the signer may not sign for region {region}")


def validate_device_identity_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ValidatedChain:
    """Steps 1-4 for a device identity (``pki issue-device``), and its purpose.

    The leaf must be an end entity with digitalSignature and clientAuth; every
    certificate carrying our constraints must be for ``device-identity`` (a
    code-signing CA cannot vouch for a device, nor a device CA for a release).
    ``at`` is the verifier's own time: a device proves who it is *now*. Any
    revocation of the device's certificate, whatever its reason, refuses it.
    """
    path = build_path(chain, roots)
    _check_extensions(path, ExtendedKeyUsageOID.CLIENT_AUTH, "device-identity")
    _check_times(path, at)
    check_revocation(path, crls, at)
    for cert in path:
        try:
            found = cons.of_certificate(cert)
        except MalformedError as exc:
            raise ConstraintError(f"{_name(cert)}: {exc}") from exc
        if found is not None and found.purpose != cons.DEVICE_IDENTITY:
            raise ConstraintError(f"{_name(cert)} is for {found.purpose}, not device identity")
    return ValidatedChain(path, None, None)
