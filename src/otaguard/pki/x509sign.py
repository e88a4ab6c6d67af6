"""Signing certificates and CRLs with any :class:`~otaguard.crypto.signer.Signer`.

``cryptography``'s builders can only sign with a private key object held in
this process. For HSM keys we let the builder produce the to-be-signed part
with a throw-away key of the same type (the TBS structure names the signature
algorithm but contains nothing of the signing key), sign those exact bytes in
the token, and assemble ``SEQUENCE { tbs, signatureAlgorithm, BIT STRING }``
ourselves. The result is parsed back and its signature checked against the
real public key before it is returned, so a mistake here cannot produce a
certificate that does not verify.

RSA CA keys sign with RSASSA-PSS (SHA-256, salt 32), like everything else.
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from otaguard.crypto.keys import PrivateKey, PublicKey
from otaguard.crypto.schemes import PSS_SALT_LENGTH
from otaguard.crypto.signer import KeySigner, Signer


def _hash_for(key: PublicKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def _padding_for(key: PublicKey) -> padding.PSS | None:
    if isinstance(key, rsa.RSAPublicKey):
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
    return None


@functools.lru_cache(maxsize=8)
def _stand_in(kind: str, size: int) -> PrivateKey:
    """A throw-away key of the signer's type, used only to shape the TBS bytes."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "secp256r1":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "secp384r1":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def _stand_in_for(key: PublicKey) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _stand_in("ed25519", 0)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _stand_in(key.curve.name, 0)
    return _stand_in("rsa", key.key_size)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_split(der: bytes) -> list[bytes]:
    """The encoded elements inside the outer SEQUENCE of ``der`` (trusted input)."""

    def header(data: bytes, pos: int) -> tuple[int, int]:
        first = data[pos + 1]
        if first < 0x80:
            return pos + 2, first
        count = first & 0x7F
        return pos + 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")

    start, length = header(der, 0)
    elements = []
    pos = start
    while pos < start + length:
        body, size = header(der, pos)
        elements.append(der[pos : body + size])
        pos = body + size
    return elements


def _assemble(signed_der: bytes, tbs: bytes, signature: bytes) -> bytes:
    """Replace the signature of a stand-in-signed structure by ``signature``."""
    _, algorithm, _ = _der_split(signed_der)
    bit_string = b"\x03" + _der_len(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm + bit_string
    return b"\x30" + _der_len(len(body)) + body


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """Sign ``builder`` with ``signer`` (file key or HSM key)."""
    key = signer.public_key
    if isinstance(signer, KeySigner):
        return builder.sign(
            signer.private_key,
            _hash_for(key),
            rsa_padding=_padding_for(key),
        )
    shaped = builder.sign(_stand_in_for(key), _hash_for(key), rsa_padding=_padding_for(key))
    tbs = shaped.tbs_certificate_bytes
    cert = x509.load_der_x509_certificate(_assemble(_to_der(shaped), tbs, signer.sign(tbs)))
    _check(cert, key)
    return cert


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: Signer
) -> x509.CertificateRevocationList:
    """Sign a CRL with ``signer`` (file key or HSM key)."""
    key = signer.public_key
    if isinstance(signer, KeySigner):
        return builder.sign(
            signer.private_key,
            _hash_for(key),
            rsa_padding=_padding_for(key),
        )
    shaped = builder.sign(_stand_in_for(key), _hash_for(key), rsa_padding=_padding_for(key))
    tbs = shaped.tbs_certlist_bytes
    crl = x509.load_der_x509_crl(_assemble(_to_der(shaped), tbs, signer.sign(tbs)))
    if not crl.is_signature_valid(key):
        raise RuntimeError("assembled CRL does not verify: signer and key disagree")
    return crl


def _to_der(obj: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(obj.public_bytes(Encoding.DER))


def _check(cert: x509.Certificate, issuer_key: PublicKey) -> None:
    from otaguard.crypto.schemes import scheme_for_key, verify_signature

    verify_signature(
        issuer_key, scheme_for_key(issuer_key), cert.tbs_certificate_bytes, cert.signature
    )
