"""Key generation, serialization and loading.

Keys made by stock OpenSSL (``openssl genpkey``) must work wherever a key is
asked for, so loading accepts PEM and DER, PKCS#8 and the traditional
"BEGIN RSA/EC PRIVATE KEY" forms, encrypted or not. Only the algorithms the
signature schemes support are accepted: an unsupported curve or a small RSA
modulus is refused when the key is loaded, not later when a signature fails.

A key id is the SHA-256 of the SubjectPublicKeyInfo DER: it is derived from
the key itself, so it cannot be chosen by an attacker independently of the key.
"""

from __future__ import annotations

import enum
import hashlib
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from otaguard.errors import KeyLoadError

if TYPE_CHECKING:
    from cryptography import x509

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: RSA moduli below this are refused everywhere. 2048 is kept only because
#: MCUboot's RSA2048_PSS TLV is still the most deployed variant.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_CURVES = ("secp256r1", "secp384r1")


class KeyType(enum.Enum):
    """Key types ``otaguard key generate`` can make."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """Make a fresh private key of ``key_type``."""
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = 3072 if key_type is KeyType.RSA_3072 else 4096
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_der(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER: the bytes a key id is computed over."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, as ``openssl pkey -pubout`` writes it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PublicKey) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def key_id_bytes(key: PublicKey) -> bytes:
    """The raw 32-byte key id, as it is stored in signature entries."""
    return hashlib.sha256(public_key_der(key)).digest()


def describe_key(key: PublicKey) -> str:
    """A short human name for a key's algorithm, e.g. ``ecdsa-p256`` or ``rsa-3072``."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(
            key.curve.name, f"ecdsa-{key.curve.name}"
        )
    return f"rsa-{key.key_size}"


def check_supported(key: PublicKey | object) -> PublicKey:
    """Return ``key`` if its algorithm and size are supported, else raise KeyLoadError."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise KeyLoadError(f"unsupported elliptic curve {key.curve.name} (use P-256 or P-384)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise KeyLoadError(
                f"unsupported RSA key size {key.key_size} bits "
                f"(need {MIN_RSA_BITS} to {MAX_RSA_BITS})"
            )
        return key
    raise KeyLoadError(f"unsupported key type {type(key).__name__}")


def certificate_key(cert: x509.Certificate, where: str = "") -> PublicKey:
    """The public key of ``cert``, checked like any key; KeyLoadError if it is broken.

    Why one function: a certificate still parses when its key does not (one flipped
    bit in the public point), and cryptography finds out only in ``public_key()``,
    with a ValueError or UnsupportedAlgorithm. Every key otaguard takes out of a
    certificate it was handed comes through here, so that is a key error (exit 2)
    naming the file (``where``), never an internal error.
    """
    prefix = f"{where}: " if where else ""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(
            f"{prefix}the certificate {_subject(cert)} holds a broken or unsupported public key"
        ) from exc
    try:
        return check_supported(key)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{prefix}the certificate {_subject(cert)}: {exc}") from exc


def _subject(cert: x509.Certificate) -> str:
    try:
        return repr(cert.subject.rfc4514_string())
    except ValueError:
        return "(unreadable subject)"


def _looks_pem(data: bytes) -> bool:
    return b"-----BEGIN" in data[:4096]


def load_private_key(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM or DER private key, decrypting it with ``passphrase`` if needed."""
    loader = (
        serialization.load_pem_private_key
        if _looks_pem(data)
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, password=passphrase)
    except TypeError as exc:
        # cryptography raises TypeError both for "encrypted but no password"
        # and "password given but key not encrypted".
        if passphrase is None:
            raise KeyLoadError("the key is encrypted: give its passphrase") from exc
        raise KeyLoadError("the key is not encrypted but a passphrase was given") from exc
    except UnsupportedAlgorithm as exc:
        raise KeyLoadError("unsupported key algorithm") from exc
    except ValueError as exc:
        if passphrase is not None and b"ENCRYPTED" in data[:4096]:
            raise KeyLoadError("cannot decrypt the key: wrong passphrase?") from exc
        raise KeyLoadError("not a private key in PEM or DER form") from exc
    if not isinstance(
        key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
    ):
        raise KeyLoadError(f"unsupported key type {type(key).__name__}")
    check_supported(key.public_key())
    return key


def load_public_key(data: bytes) -> PublicKey:
    """Load a public key from SPKI PEM/DER, an X.509 certificate, or a private key file.

    Accepting a certificate or a private key lets an operator point
    ``--trusted-key`` at whatever file they have; only the public part is kept.
    """
    pem = _looks_pem(data)
    if pem and b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509  # lazy: x509 costs more start-up than the rest

        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise KeyLoadError("not a valid X.509 certificate") from exc
        return certificate_key(cert)
    if pem and b"PRIVATE KEY-----" in data:
        return check_supported(load_private_key(data).public_key())
    loader = serialization.load_pem_public_key if pem else serialization.load_der_public_key
    try:
        key = loader(data)
    except UnsupportedAlgorithm as exc:
        raise KeyLoadError("unsupported key algorithm") from exc
    except ValueError as exc:
        if not pem:
            try:
                return check_supported(load_private_key(data).public_key())
            except KeyLoadError:
                pass
        raise KeyLoadError("not a public key in PEM or DER form") from exc
    return check_supported(key)
