"""Device trust anchors: which roots a device accepts, and how that set may change.

A device's anchor is the SHA-256 of its root CA's public key (SPKI DER), kept
in OTP at manufacture, together with a *key epoch* held as a one-way fuse
counter. A root rotation is accepted only through an **anchor rotation
message** signed by a root the device already trusts, naming the new root and
an epoch higher than the device's. Applying it moves the epoch forward, so
the anchors of older epochs can never be used again: a stolen old root key
cannot sign its way back in.

Message layout (big-endian)::

    magic "OTAGANCH" | u32 epoch | u32 cert length | new root certificate (DER)
    | u8 signature scheme | u16 signature length | signature

The signature covers everything before the scheme byte, and is made with the
*current* root's key (its scheme per ``otaguard.crypto.schemes``).

The state here is pure data; the device layer persists it (anchors in OTP,
epoch in fuses, learned CRLs in secure storage).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from cryptography import x509

from otaguard.crypto.keys import certificate_key, check_supported, key_id_bytes
from otaguard.crypto.schemes import SignatureScheme, verify_signature
from otaguard.crypto.signer import Signer
from otaguard.errors import (
    AnchorRotationError,
    ChainError,
    KeyLoadError,
    MalformedError,
    SignatureError,
    TruncatedError,
)

MAGIC = b"OTAGANCH"
MAX_CERT = 16 * 1024


@dataclass(frozen=True)
class Anchor:
    key_hash: bytes  # SHA-256 of the root's SPKI DER
    epoch: int


@dataclass(frozen=True)
class AnchorState:
    """What a device trusts: anchors, the fuse epoch, and the roots' certificates."""

    epoch: int
    anchors: tuple[Anchor, ...]
    roots: tuple[bytes, ...] = field(default=())  # DER certificates of the anchored roots

    def active_roots(self) -> list[x509.Certificate]:
        """Root certificates whose key hash is an anchor of the current epoch or later."""
        live = {a.key_hash for a in self.anchors if a.epoch >= self.epoch}
        out = []
        for der in self.roots:
            cert = x509.load_der_x509_certificate(der)
            if key_id_bytes(cert.public_key()) in live:  # type: ignore[arg-type]
                out.append(cert)
        return out


def provision(root: x509.Certificate, epoch: int = 1) -> AnchorState:
    """The state written at manufacture."""
    key = check_supported(root.public_key())
    return AnchorState(epoch, (Anchor(key_id_bytes(key), epoch),), (_der(root),))


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def make_rotation(current_root_signer: Signer, new_root: x509.Certificate, epoch: int) -> bytes:
    cert = _der(new_root)
    body = MAGIC + struct.pack(">II", epoch, len(cert)) + cert
    sig = current_root_signer.sign(body)
    return body + struct.pack(">BH", int(current_root_signer.scheme), len(sig)) + sig


def apply_rotation(state: AnchorState, message: bytes) -> AnchorState:
    """Verify ``message`` against the current anchors and return the new state."""
    if len(message) < len(MAGIC) + 8 or not message.startswith(MAGIC):
        raise MalformedError("not an anchor rotation message")
    epoch, cert_len = struct.unpack(">II", message[8:16])
    if cert_len > MAX_CERT:
        raise MalformedError("anchor rotation: certificate too large")
    body_end = 16 + cert_len
    if len(message) < body_end + 3:
        raise TruncatedError("truncated anchor rotation message")
    scheme_id, sig_len = struct.unpack(">BH", message[body_end : body_end + 3])
    if len(message) != body_end + 3 + sig_len:
        raise MalformedError("anchor rotation: length mismatch")
    try:
        scheme = SignatureScheme(scheme_id)
        new_root = x509.load_der_x509_certificate(message[16:body_end])
        new_key = certificate_key(new_root)
    except (ValueError, KeyLoadError) as exc:
        raise MalformedError(f"anchor rotation: {exc}") from exc
    if epoch <= state.epoch:
        raise AnchorRotationError(
            f"rotation to epoch {epoch} is not above the device's epoch {state.epoch} (replay)"
        )
    body, sig = message[:body_end], message[body_end + 3 :]
    for root in state.active_roots():
        try:
            verify_signature(check_supported(root.public_key()), scheme, body, sig)
        except SignatureError:
            continue
        break
    else:
        raise AnchorRotationError("the rotation is not signed by a root this device trusts")
    try:
        new_root.verify_directly_issued_by(new_root)
    except Exception as exc:
        raise ChainError("the new root is not a valid self-signed certificate") from exc
    anchors = (*state.anchors, Anchor(key_id_bytes(new_key), epoch))
    return replace(state, epoch=epoch, anchors=anchors, roots=(*state.roots, _der(new_root)))
