"""Keys: generation, serialization, loading (including OpenSSL-made keys), key ids."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from helpers import ALL_KEY_TYPES, cached_key
from otaguard.crypto.keys import (
    KeyType,
    describe_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_der,
    public_key_pem,
)
from otaguard.crypto.schemes import SignatureScheme, scheme_for_key, verify_signature
from otaguard.crypto.signer import KeySigner
from otaguard.errors import KeyLoadError, SignatureError


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_pem_round_trip_plain_and_encrypted(key_type: KeyType) -> None:
    key = cached_key(key_type)
    plain = private_key_pem(key, None)
    assert b"BEGIN PRIVATE KEY" in plain
    assert key_id(load_private_key(plain).public_key()) == key_id(key.public_key())
    encrypted = private_key_pem(key, b"correct horse")
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in encrypted
    loaded = load_private_key(encrypted, b"correct horse")
    assert key_id(loaded.public_key()) == key_id(key.public_key())
    assert describe_key(key.public_key()) == key_type.value


def test_encrypted_key_errors_are_clear() -> None:
    pem = private_key_pem(cached_key(KeyType.ED25519), b"secret")
    with pytest.raises(KeyLoadError, match="encrypted"):
        load_private_key(pem)
    with pytest.raises(KeyLoadError, match="wrong passphrase"):
        load_private_key(pem, b"wrong")
    with pytest.raises(KeyLoadError, match="not encrypted"):
        load_private_key(private_key_pem(cached_key(KeyType.ED25519), None), b"secret")


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n", bytes(64)]
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(KeyLoadError):
        load_private_key(data)
    with pytest.raises(KeyLoadError):
        load_public_key(data)


def test_unsupported_curve_and_small_rsa_are_refused() -> None:
    p521 = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(KeyLoadError, match="curve"):
        load_private_key(private_key_pem(p521, None))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyLoadError, match="RSA key size"):
        load_public_key(public_key_pem(small.public_key()))


def test_key_id_is_sha256_of_spki_der() -> None:
    pub = cached_key(KeyType.ECDSA_P256).public_key()
    assert key_id(pub) == hashlib.sha256(public_key_der(pub)).hexdigest()
    assert key_id(pub) != key_id(cached_key(KeyType.ECDSA_P256, 1).public_key())


def test_public_key_loads_from_private_key_and_der() -> None:
    key = cached_key(KeyType.ECDSA_P384)
    assert key_id(load_public_key(private_key_pem(key, None))) == key_id(key.public_key())
    assert key_id(load_public_key(public_key_der(key.public_key()))) == key_id(key.public_key())


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_signer_round_trip_and_rejections(key_type: KeyType) -> None:
    key = cached_key(key_type)
    signer = KeySigner(key)
    assert signer.scheme is scheme_for_key(key.public_key())
    sig = signer.sign(b"message")
    verify_signature(key.public_key(), signer.scheme, b"message", sig)
    with pytest.raises(SignatureError):
        verify_signature(key.public_key(), signer.scheme, b"messagE", sig)
    with pytest.raises(SignatureError):
        verify_signature(cached_key(key_type, 1).public_key(), signer.scheme, b"message", sig)
    wrong = next(s for s in SignatureScheme if s is not signer.scheme)
    with pytest.raises(SignatureError, match="does not match the key"):
        verify_signature(key.public_key(), wrong, b"message", sig)


OPENSSL_KEYS = {
    "rsa-4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
    "ed25519": ["-algorithm", "ED25519"],
    "ecdsa-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ecdsa-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
}


@pytest.mark.parametrize("name", list(OPENSSL_KEYS))
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_openssl_genpkey_keys_load(tmp_path: Path, name: str, encrypted: bool) -> None:
    path = tmp_path / "key.pem"
    cmd = ["openssl", "genpkey", *OPENSSL_KEYS[name], "-out", str(path)]
    if encrypted:
        cmd += ["-aes-256-cbc", "-pass", "pass:hunter22"]
    subprocess.run(cmd, check=True, capture_output=True)
    key = load_private_key(path.read_bytes(), b"hunter22" if encrypted else None)
    assert describe_key(key.public_key()) == name
    # The public key OpenSSL derives has the same key id as ours.
    der = subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(path),
            "-pubout",
            "-outform",
            "DER",
            "-passin",
            "pass:hunter22",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert hashlib.sha256(der).hexdigest() == key_id(key.public_key())


def test_traditional_ec_pem_loads(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path)],
        check=True,
        capture_output=True,
    )
    assert b"BEGIN EC PRIVATE KEY" in path.read_bytes()
    assert describe_key(load_private_key(path.read_bytes()).public_key()) == "ecdsa-p256"
