"""HSM keys through PKCS#11 (SoftHSM2): generation, signing, non-extractability, URIs."""

from __future__ import annotations

import io

import pkcs11
import pytest

from conftest import hsm_uri
from helpers import cached_key
from otaguard.crypto.keys import KeyType, key_id
from otaguard.crypto.loader import load_signer
from otaguard.crypto.pkcs11 import Pkcs11Signer, generate_pkcs11_key, parse_pkcs11_uri
from otaguard.crypto.schemes import verify_prehashed, verify_signature
from otaguard.errors import KeyLoadError, SignatureError, UsageError
from otaguard.image import ImagePolicy, TrustedKeys, sign_stream, verify_stream

HSM_TYPES = [KeyType.ED25519, KeyType.ECDSA_P256, KeyType.ECDSA_P384, KeyType.RSA_4096]


@pytest.fixture(scope="module")
def hsm_keys(softhsm: dict[str, str]) -> dict[KeyType, str]:
    uris = {}
    for key_type in HSM_TYPES:
        uri = hsm_uri(softhsm, f"module-{key_type.value}")
        generate_pkcs11_key(uri, key_type)
        uris[key_type] = uri
    return uris


@pytest.mark.parametrize("key_type", HSM_TYPES, ids=lambda k: k.value)
def test_hsm_signatures_verify_with_software(
    hsm_keys: dict[KeyType, str], key_type: KeyType
) -> None:
    with Pkcs11Signer(hsm_keys[key_type]) as signer:
        sig = signer.sign(b"release 1.4.0")
        verify_signature(signer.public_key, signer.scheme, b"release 1.4.0", sig)
        with pytest.raises(SignatureError):
            verify_signature(signer.public_key, signer.scheme, b"release 1.4.1", sig)
        if key_type is not KeyType.ED25519:
            import hashlib

            name = "sha384" if key_type is KeyType.ECDSA_P384 else "sha256"
            digest = hashlib.new(name, b"region").digest()
            verify_prehashed(
                signer.public_key, signer.scheme, digest, signer.sign_prehashed(digest)
            )


@pytest.mark.parametrize("key_type", HSM_TYPES, ids=lambda k: k.value)
def test_hsm_signed_envelope_round_trip(hsm_keys: dict[KeyType, str], key_type: KeyType) -> None:
    signer = load_signer(hsm_keys[key_type])
    assert isinstance(signer, Pkcs11Signer)
    out = io.BytesIO()
    sign_stream(
        io.BytesIO(b"firmware" * 100),
        out,
        [signer],
        version="2.0.0",
        security_counter=3,
        hardware_ids=["acme-ecu-v2"],
        created=0,
    )
    out.seek(0)
    result = verify_stream(
        out, TrustedKeys.of([signer.public_key]), threshold=1, policy=ImagePolicy()
    )
    assert result.signed_by == (key_id(signer.public_key),)
    out.seek(0)
    with pytest.raises(Exception, match="no signature by a trusted key"):
        verify_stream(
            out,
            TrustedKeys.of([cached_key(key_type).public_key()]),
            threshold=1,
            policy=ImagePolicy(),
        )
    signer.close()


def test_private_key_is_not_extractable(
    softhsm: dict[str, str], hsm_keys: dict[KeyType, str]
) -> None:
    import os

    lib = pkcs11.lib(softhsm["module"])
    token = lib.get_token(token_label="otaguard-test")
    try:
        session = token.open(user_pin=os.environ["OTAGUARD_TEST_PIN"])
    except pkcs11.exceptions.UserAlreadyLoggedIn:  # an earlier test's signer, still open
        session = token.open()
    with session:
        for key_type in HSM_TYPES:
            private = session.get_key(
                object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=f"module-{key_type.value}"
            )
            assert private[pkcs11.Attribute.SENSITIVE] is True
            assert private[pkcs11.Attribute.EXTRACTABLE] is False
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                private[
                    pkcs11.Attribute.VALUE
                    if key_type is not KeyType.RSA_4096
                    else pkcs11.Attribute.PRIVATE_EXPONENT
                ]


def test_generate_refuses_existing_label(hsm_keys: dict[KeyType, str]) -> None:
    with pytest.raises(UsageError, match="already holds"):
        generate_pkcs11_key(hsm_keys[KeyType.ED25519], KeyType.ED25519)


def test_a_wrong_pin_is_refused_while_another_session_is_logged_in(
    softhsm: dict[str, str], hsm_keys: dict[KeyType, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PKCS#11 shares one login per process: the second session must not skip the PIN."""
    with Pkcs11Signer(hsm_keys[KeyType.ED25519]) as first:
        monkeypatch.setenv("OTAGUARD_TEST_PIN", "0000")
        with pytest.raises(KeyLoadError, match="cannot open PKCS#11 token: PinIncorrect"):
            Pkcs11Signer(hsm_keys[KeyType.ED25519])
        with pytest.raises(KeyLoadError, match="PinIncorrect"):
            generate_pkcs11_key(hsm_uri(softhsm, "never-made"), KeyType.ED25519)
        monkeypatch.setenv("OTAGUARD_TEST_PIN", "4321")
        with Pkcs11Signer(hsm_keys[KeyType.ED25519]) as second:
            assert second.sign(b"m") and first.sign(b"m")


def test_bad_uris_and_pins(
    softhsm: dict[str, str], hsm_keys: dict[KeyType, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ["pkcs11:object=x", "pkcs11:token=t;frob=1", "pkcs11:token=a;token=b", "file:x"]:
        with pytest.raises(UsageError):
            parse_pkcs11_uri(bad)
    with pytest.raises(KeyLoadError, match="no key"):
        Pkcs11Signer(hsm_uri(softhsm, "does-not-exist"))
    monkeypatch.setenv("OTAGUARD_TEST_PIN", "0000")
    with pytest.raises(KeyLoadError, match="cannot open"):
        Pkcs11Signer(hsm_keys[KeyType.ED25519])
    monkeypatch.delenv("OTAGUARD_TEST_PIN")
    with pytest.raises(UsageError, match="not set"):
        Pkcs11Signer(hsm_keys[KeyType.ED25519])
    uri = parse_pkcs11_uri("pkcs11:token=a;object=b?pin-value=1234&module-path=/x.so")
    assert "1234" not in uri.without_pin()
