"""What the device trusts: keys and root certificates that hash to an OTP anchor.

Public keys and root certificates are too large for OTP, so the device keeps
them in ordinary storage and keeps only their hashes (SHA-256 of the SPKI
DER, ``otaguard.crypto.keys.key_id_bytes``) in fuses, as MCUboot and most
secure-boot ROMs do. Anything in storage that does not hash to an anchor is
ignored, so replacing the stored key file gains an attacker nothing.

Two kinds of anchor, chosen per image:

* an image that carries a certificate chain is verified through the PKI
  (``otaguard.pki.image_trust``): the chain must lead to an anchored root
  certificate, at the image's signing time, within the chain's constraints
  and the device's region, and not revoked by a CRL the device has learned;
* an image without a chain must be signed by an anchored bare key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from otaguard.crypto.keys import PublicKey, check_supported, key_id_bytes
from otaguard.errors import KeyLoadError, MalformedError, UnknownKeyError
from otaguard.image import ImageMetadata, TrustedKeys
from otaguard.image.envelope_verify import KeyResolver
from otaguard.pki.image_trust import validate_image_chain


@dataclass(frozen=True)
class DeviceTrust:
    anchors: frozenset[bytes]
    keys: tuple[PublicKey, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = field(default=())
    region: str | None = None

    def anchored_keys(self) -> list[PublicKey]:
        return [k for k in self.keys if key_id_bytes(k) in self.anchors]

    def anchored_roots(self) -> list[x509.Certificate]:
        return [r for r in self.roots if _root_hash(r) in self.anchors]

    def resolver(self) -> KeyResolver:
        keys = self.anchored_keys()
        roots = self.anchored_roots()

        def resolve(meta: ImageMetadata) -> TrustedKeys:
            if meta.cert_chain and roots:
                chain = validate_image_chain(meta, roots, crls=self.crls, region=self.region)
                try:
                    return TrustedKeys.of([check_supported(chain.leaf.public_key())])
                except KeyLoadError as exc:
                    raise MalformedError(f"signer certificate: {exc}") from exc
            if keys:
                return TrustedKeys.of(keys)
            raise UnknownKeyError("no trust anchor of this device applies to the image")

        return resolve


def _root_hash(cert: x509.Certificate) -> bytes:
    try:
        return key_id_bytes(check_supported(cert.public_key()))
    except KeyLoadError:
        return b""


def anchor_of(item: PublicKey | x509.Certificate) -> bytes:
    """The OTP anchor for a bare key or a root certificate: the hash of its public key."""
    if isinstance(item, x509.Certificate):
        return key_id_bytes(check_supported(item.public_key()))
    return key_id_bytes(item)


def split_anchors(
    items: Sequence[PublicKey | x509.Certificate],
) -> tuple[tuple[PublicKey, ...], tuple[x509.Certificate, ...]]:
    keys = tuple(i for i in items if not isinstance(i, x509.Certificate))
    roots = tuple(i for i in items if isinstance(i, x509.Certificate))
    return keys, roots
