"""The revocation lists a device has learned, kept in its secure storage.

Devices are offline most of the time and have no reliable clock, so they
cannot fetch CRLs when they verify. Instead CRLs reach them inside signed
update metadata, and the device keeps, per issuing CA, the newest list it has
seen. :func:`learn_crl` decides whether a list may replace the stored one:

* the CRL must be signed by a CA that itself validates up to one of the
  device's trusted roots (the root, or an intermediate whose chain is given);
* its CRL number must be strictly greater than the stored one for that CA, so
  an attacker cannot replay an older list that predates a revocation.

The state is pure data (DER bytes); the device layer persists it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard.crypto.keys import key_id_bytes
from otaguard.errors import ChainError, MalformedError, RevokedError, StaleCrlError
from otaguard.pki.validate import build_path

MAX_CRL_SIZE = 1 << 20


@dataclass(frozen=True)
class LearnedCrls:
    """Newest CRL per issuing CA key, as DER."""

    crls: tuple[bytes, ...] = ()

    def parsed(self) -> list[x509.CertificateRevocationList]:
        return [x509.load_der_x509_crl(der) for der in self.crls]


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        raise MalformedError("a CRL without a CRL number cannot be ordered") from None


def _issuer_of(
    crl: x509.CertificateRevocationList,
    issuer_chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> x509.Certificate:
    """The CA that signed ``crl``, validated up to a trusted root."""
    for root in roots:
        if crl.issuer == root.subject and crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
            return root
    for index, candidate in enumerate(issuer_chain):
        if crl.issuer != candidate.subject:
            continue
        if not crl.is_signature_valid(candidate.public_key()):  # type: ignore[arg-type]
            continue
        path = build_path([candidate, *issuer_chain[index + 1 :]], roots)
        for cert in path:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not basic.ca:
                raise ChainError("the CRL's issuer is not a CA")
        return candidate
    raise RevokedError("the CRL is not signed by a CA this device trusts")


def learn_crl(
    store: LearnedCrls,
    crl_bytes: bytes,
    *,
    roots: Sequence[x509.Certificate],
    issuer_chain: Sequence[x509.Certificate] = (),
) -> LearnedCrls:
    """Return ``store`` with ``crl_bytes`` (PEM or DER) as its issuer's newest list."""
    if len(crl_bytes) > MAX_CRL_SIZE:
        raise MalformedError("CRL too large")
    try:
        crl = (
            x509.load_pem_x509_crl(crl_bytes)
            if crl_bytes.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(crl_bytes)
        )
    except ValueError as exc:
        raise MalformedError("not an X.509 CRL") from exc
    issuer = _issuer_of(crl, issuer_chain, roots)
    issuer_id = key_id_bytes(issuer.public_key())  # type: ignore[arg-type]
    number = _number(crl)
    kept: list[bytes] = []
    for der in store.crls:
        old = x509.load_der_x509_crl(der)
        old_issuer = _issuer_key_id(old, issuer, issuer_id)
        if old_issuer == issuer_id:
            if _number(old) >= number:
                raise StaleCrlError(
                    f"CRL number {number} is not newer than the stored {_number(old)} "
                    f"for {issuer.subject.rfc4514_string()}"
                )
            continue  # replaced
        kept.append(der)
    return LearnedCrls((*kept, crl.public_bytes(Encoding.DER)))


def _issuer_key_id(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, issuer_id: bytes
) -> bytes | None:
    """``issuer_id`` if ``crl`` was signed by ``issuer``, else None."""
    if crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return issuer_id
    return None
