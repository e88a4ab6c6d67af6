"""Issuing the hierarchy: root, regional intermediates, short-lived signers, devices, CRLs.

Pure builders: every function takes the issuer (certificate + signer), the
subject's public key and explicit times, and returns a certificate. Nothing
here reads a clock or a file. Issuance refuses what a verifier would refuse
later (a CA issuing below its path length, a child outliving its issuer,
constraints wider than the issuer's), so mistakes surface at the ceremony,
not in the field.

Profile (checked by ``openssl verify`` in the tests):

* root: CA, no path length limit unless asked, keyCertSign + cRLSign, self-signed;
* intermediate: CA, pathLen 0 by default, keyCertSign + cRLSign, our constraints
  extension (purpose, regions, hardware ids);
* signer: end entity, digitalSignature, extendedKeyUsage codeSigning;
* device: end entity, digitalSignature + keyAgreement, extendedKeyUsage clientAuth,
  issued only by a CA whose purpose is device-identity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from otaguard.crypto.keys import PublicKey
from otaguard.crypto.signer import Signer
from otaguard.errors import UsageError
from otaguard.pki import constraints as cons
from otaguard.pki.serial import check_serial
from otaguard.pki.x509sign import sign_certificate, sign_crl

REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
}


@dataclass(frozen=True)
class Issuer:
    """A CA able to issue: its certificate and a signer for its key."""

    cert: x509.Certificate
    signer: Signer


def parse_subject(text: str) -> x509.Name:
    """``"CN=Acme Root CA,O=Acme"`` (RFC 4514) into a Name; a bare string becomes a CN."""
    if "=" not in text:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise UsageError(f"invalid subject {text!r}: {exc}") from exc
    if not list(name):
        raise UsageError("empty subject")
    return name


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    key: PublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    if not_after <= not_before:
        raise UsageError("the certificate would expire before it becomes valid")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _check_issuer(issuer: Issuer, not_after: dt.datetime, *, issuing_ca: bool) -> None:
    cert = issuer.cert
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not basic.ca:
        raise UsageError("the issuer is not a CA")
    if issuing_ca and basic.path_length == 0:
        raise UsageError("the issuer's path length (0) does not allow issuing another CA")
    if not_after > cert.not_valid_after_utc:
        raise UsageError(
            f"the new certificate would outlive its issuer (valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}); shorten it or renew the issuer"
        )
    from otaguard.crypto.keys import key_id

    if key_id(issuer.signer.public_key) != key_id(cert.public_key()):  # type: ignore[arg-type]
        raise UsageError("the issuer's key does not match its certificate")


def _aki(issuer: Issuer) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.signer.public_key)


def build_root(
    signer: Signer,
    subject: x509.Name,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None = None,
) -> x509.Certificate:
    builder = (
        _base(subject, subject, signer.public_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_usage(), critical=True)
    )
    return sign_certificate(builder, signer)


def build_intermediate(
    issuer: Issuer,
    key: PublicKey,
    subject: x509.Name,
    constraints: cons.Constraints,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int = 0,
) -> x509.Certificate:
    _check_issuer(issuer, not_after, issuing_ca=True)
    parent = cons.of_certificate(issuer.cert)
    if parent is not None and not constraints.narrower_than(parent):
        raise UsageError("the new CA's constraints are wider than its issuer's")
    builder = (
        _base(subject, issuer.cert.subject, key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(cons.extension(constraints), critical=False)
    )
    return sign_certificate(builder, issuer.signer)


def _leaf_constraints(
    issuer: Issuer, purpose: str, regions: Sequence[str], hardware_ids: Sequence[str]
) -> cons.Constraints:
    parent = cons.of_certificate(issuer.cert)
    if parent is not None and parent.purpose != purpose:
        raise UsageError(f"this CA issues {parent.purpose} certificates, not {purpose}")
    mine = cons.Constraints(
        purpose,
        frozenset(regions) if regions else (parent.regions if parent else None),
        frozenset(hardware_ids) if hardware_ids else (parent.hardware_ids if parent else None),
    )
    if parent is not None and not mine.narrower_than(parent):
        raise UsageError("the certificate's constraints are wider than its issuer's")
    return mine


def build_signer(
    issuer: Issuer,
    key: PublicKey,
    name: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    regions: Sequence[str] = (),
    hardware_ids: Sequence[str] = (),
) -> x509.Certificate:
    """A short-lived code-signing certificate for a release key."""
    _check_issuer(issuer, not_after, issuing_ca=False)
    constraints = _leaf_constraints(issuer, cons.CODE_SIGNING, regions, hardware_ids)
    builder = (
        _base(parse_subject(f"CN={name}"), issuer.cert.subject, key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(cons.extension(constraints), critical=False)
    )
    return sign_certificate(builder, issuer.signer)


def build_device(
    issuer: Issuer,
    key: PublicKey,
    device_id: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A device identity certificate, for TLS client auth and signed reports."""
    _check_issuer(issuer, not_after, issuing_ca=False)
    constraints = _leaf_constraints(issuer, cons.DEVICE_IDENTITY, (), ())
    builder = (
        _base(parse_subject(f"CN={device_id}"), issuer.cert.subject, key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(cons.extension(constraints), critical=False)
    )
    return sign_certificate(builder, issuer.signer)


def cross_sign(
    old_root: Issuer,
    new_root: x509.Certificate,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """The new root's subject and key, certified by the old root (for root rotation).

    Devices that still trust the old root can then validate chains that end in
    the new root, until they have moved their anchor.
    """
    _check_issuer(old_root, not_after, issuing_ca=True)
    basic = new_root.extensions.get_extension_for_class(x509.BasicConstraints).value
    builder = (
        _base(new_root.subject, old_root.cert.subject, new_root.public_key(), not_before, not_after)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=True, path_length=basic.path_length), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_aki(old_root), critical=False)
    )
    return sign_certificate(builder, old_root.signer)


@dataclass(frozen=True)
class Revocation:
    serial: int
    date: dt.datetime
    reason: str

    def __post_init__(self) -> None:
        check_serial(self.serial)
        if self.reason not in REVOCATION_REASONS:
            raise UsageError(
                f"unknown revocation reason {self.reason!r} "
                f"(one of {', '.join(REVOCATION_REASONS)})"
            )


def build_crl(
    issuer: Issuer,
    revoked: Sequence[Revocation],
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.date)
            .add_extension(x509.CRLReason(REVOCATION_REASONS[entry.reason]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(item)
    return sign_crl(builder, issuer.signer)
