"""Path validation: every rejection the issue lists, each with its reason, plus the accepts."""

from __future__ import annotations

import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from helpers_pki import DAY, HW, NOW, Pki, _signer, der, make_pki, sign_image
from otaguard.crypto.keys import KeyType
from otaguard.errors import (
    CertificateValidityError,
    ChainError,
    ConstraintError,
    KeyUsageError,
    PathLengthError,
    RevokedError,
    UnknownKeyError,
)
from otaguard.image import ImagePolicy
from otaguard.pki.constraints import CODE_SIGNING, DEVICE_IDENTITY, Constraints
from otaguard.pki.image_trust import verify_image_with_roots
from otaguard.pki.issue import (
    Issuer,
    Revocation,
    build_crl,
    build_intermediate,
    build_signer,
    parse_subject,
)
from otaguard.pki.x509sign import sign_certificate


def verify(
    image: bytes,
    roots: list[x509.Certificate],
    *,
    crls: tuple[x509.CertificateRevocationList, ...] = (),
    region: str | None = "eu",
) -> object:
    return verify_image_with_roots(
        io.BytesIO(image), roots, policy=ImagePolicy(hardware_id=HW), crls=crls, region=region
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def good_image(pki: Pki, **kwargs: object) -> bytes:
    return sign_image(pki.leaf.signer, der(pki.leaf.cert, pki.inter.cert), **kwargs)  # type: ignore[arg-type]


def test_valid_chain_is_accepted(pki: Pki) -> None:
    _, chain = verify(good_image(pki), [pki.root.cert])  # type: ignore[misc]
    assert chain.leaf == pki.leaf.cert and chain.root == pki.root.cert  # type: ignore[has-type]
    assert chain.regions == frozenset({"eu"}) and chain.hardware_ids == frozenset({HW})  # type: ignore[has-type]


def test_expired_signer_at_signing_time_is_rejected(pki: Pki) -> None:
    image = good_image(pki, created=NOW + 100 * DAY)  # the leaf ended at NOW + 80 days
    with pytest.raises(CertificateValidityError, match="expired"):
        verify(image, [pki.root.cert])


def test_image_keeps_verifying_after_signer_expiry(pki: Pki) -> None:
    # Signed while the leaf was valid: still fine, whatever today's date (no clock is read).
    verify(good_image(pki, created=NOW), [pki.root.cert])


def test_not_yet_valid_signer_is_rejected(pki: Pki) -> None:
    with pytest.raises(CertificateValidityError, match="not yet valid"):
        verify(good_image(pki, created=NOW - 20 * DAY), [pki.root.cert])


def _custom_leaf(
    pki: Pki,
    *,
    eku: list[x509.ObjectIdentifier] | None,
    ca: bool = False,
    digital_signature: bool = True,
) -> x509.Certificate:
    key = pki.leaf.signer.public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(parse_subject("CN=odd leaf"))
        .issuer_name(pki.inter.cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 5 * DAY)
        .not_valid_after(NOW + 5 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not digital_signature,
                key_cert_sign=ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return sign_certificate(builder, pki.inter.signer)


@pytest.mark.parametrize(
    ("eku", "ca", "ds"),
    [
        ([ExtendedKeyUsageOID.SERVER_AUTH], False, True),
        (None, False, True),
        ([ExtendedKeyUsageOID.CODE_SIGNING], True, True),
        ([ExtendedKeyUsageOID.CODE_SIGNING], False, False),
    ],
    ids=["tls-server-eku", "no-eku", "leaf-is-ca", "no-digital-signature"],
)
def test_wrong_key_usage_is_rejected(
    pki: Pki, eku: list[x509.ObjectIdentifier] | None, ca: bool, ds: bool
) -> None:
    leaf = _custom_leaf(pki, eku=eku, ca=ca, digital_signature=ds)
    image = sign_image(pki.leaf.signer, der(leaf, pki.inter.cert))
    with pytest.raises(KeyUsageError):
        verify(image, [pki.root.cert])


def test_outside_region_is_rejected(pki: Pki) -> None:
    with pytest.raises(ConstraintError, match="region us"):
        verify(good_image(pki), [pki.root.cert], region="us")
    with pytest.raises(ConstraintError, match="give the device's region"):
        verify(good_image(pki), [pki.root.cert], region=None)


def test_outside_hardware_constraint_is_rejected(pki: Pki) -> None:
    image = good_image(pki, hardware_ids=(HW, "acme-bcm-v1"))
    with pytest.raises(ConstraintError, match="acme-bcm-v1"):
        verify(image, [pki.root.cert])


def test_path_length_exceeded_is_rejected(pki: Pki) -> None:
    # The EU CA has pathLen 0, yet (forged by its own key) issues a sub-CA.
    sub_signer = _signer(KeyType.ECDSA_P256, 30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(parse_subject("CN=rogue sub CA"))
        .issuer_name(pki.inter.cert.subject)
        .public_key(sub_signer.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 5 * DAY)
        .not_valid_after(NOW + 50 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    sub = Issuer(sign_certificate(builder, pki.inter.signer), sub_signer)
    leaf = build_signer(
        sub, pki.leaf.signer.public_key, "deep", not_before=NOW - DAY, not_after=NOW + 10 * DAY
    )
    image = sign_image(pki.leaf.signer, der(leaf, sub.cert, pki.inter.cert))
    with pytest.raises(PathLengthError):
        verify(image, [pki.root.cert])


def test_revoked_leaf_is_rejected_whatever_the_signing_time(pki: Pki) -> None:
    crl = build_crl(
        pki.inter,
        [Revocation(pki.leaf.cert.serial_number, NOW + DAY, "key-compromise")],
        this_update=NOW,
        next_update=NOW + 30 * DAY,
        number=1,
    )
    with pytest.raises(RevokedError, match="key_compromise"):
        verify(good_image(pki, created=NOW), [pki.root.cert], crls=(crl,))


def test_superseded_leaf_keeps_older_images(pki: Pki) -> None:
    crl = build_crl(
        pki.inter,
        [Revocation(pki.leaf.cert.serial_number, NOW, "superseded")],
        this_update=NOW,
        next_update=NOW + 30 * DAY,
        number=2,
    )
    verify(good_image(pki, created=NOW - DAY), [pki.root.cert], crls=(crl,))
    with pytest.raises(RevokedError):
        verify(good_image(pki, created=NOW + DAY), [pki.root.cert], crls=(crl,))


def test_revoked_intermediate_is_rejected(pki: Pki) -> None:
    crl = build_crl(
        pki.root,
        [Revocation(pki.inter.cert.serial_number, NOW, "ca-compromise")],
        this_update=NOW,
        next_update=NOW + 30 * DAY,
        number=1,
    )
    with pytest.raises(RevokedError, match="Test EU CA"):
        verify(good_image(pki), [pki.root.cert], crls=(crl,))


def test_forged_crl_is_rejected(pki: Pki) -> None:
    # Claims to be the EU CA's list (name and key identifier) but is signed by another key.
    other = make_pki(root_index=11)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.inter.cert.subject)
        .last_update(NOW)
        .next_update(NOW + DAY)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.inter.signer.public_key),
            critical=False,
        )
    )
    forged = builder.sign(other.inter.signer.private_key, hashes.SHA256())  # type: ignore[attr-defined]
    with pytest.raises(RevokedError, match="not signed by it"):
        verify(good_image(pki), [pki.root.cert], crls=(forged,))


def test_crl_of_a_same_named_successor_ca_does_not_apply(pki: Pki) -> None:
    successor = make_pki(root_index=11)  # same CA names, other keys
    crl = build_crl(
        successor.inter,
        [Revocation(pki.leaf.cert.serial_number, NOW, "key-compromise")],
        this_update=NOW,
        next_update=NOW + DAY,
        number=1,
    )
    verify(good_image(pki), [pki.root.cert], crls=(crl,))


def test_chain_to_a_foreign_root_is_rejected(pki: Pki) -> None:
    foreign = make_pki(root_index=12)
    with pytest.raises(ChainError, match="does not chain to a trusted root"):
        verify(good_image(pki), [foreign.root.cert])


def test_signature_by_another_key_than_the_leafs_is_rejected(pki: Pki) -> None:
    intruder = _signer(KeyType.ED25519, 40)
    image = sign_image(intruder, der(pki.leaf.cert, pki.inter.cert))
    with pytest.raises(UnknownKeyError):
        verify(image, [pki.root.cert])


def test_missing_chain_is_rejected(pki: Pki) -> None:
    with pytest.raises(ChainError, match="no certificate chain"):
        verify(sign_image(pki.leaf.signer, []), [pki.root.cert])


def test_unknown_critical_extension_is_rejected(pki: Pki) -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(parse_subject("CN=crit"))
        .issuer_name(pki.inter.cert.subject)
        .public_key(pki.leaf.signer.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 5 * DAY)
        .not_valid_after(NOW + 5 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
            critical=True,
        )
    )
    leaf = sign_certificate(builder, pki.inter.signer)
    with pytest.raises(ChainError, match="unknown critical extension"):
        verify(sign_image(pki.leaf.signer, der(leaf, pki.inter.cert)), [pki.root.cert])


def test_device_ca_cannot_certify_code_signers(pki: Pki) -> None:
    device_ca_signer = _signer(KeyType.ECDSA_P256, 50)
    device_ca = Issuer(
        build_intermediate(
            pki.root,
            device_ca_signer.public_key,
            parse_subject("CN=Device CA"),
            Constraints(DEVICE_IDENTITY),
            not_before=NOW - 300 * DAY,
            not_after=NOW + 1000 * DAY,
        ),
        device_ca_signer,
    )
    from otaguard.errors import UsageError

    with pytest.raises(UsageError, match="device-identity"):
        build_signer(
            device_ca, pki.leaf.signer.public_key, "x", not_before=NOW, not_after=NOW + DAY
        )


def test_issuance_refuses_wider_constraints_and_overlong_children(pki: Pki) -> None:
    from otaguard.errors import UsageError

    with pytest.raises(UsageError, match="wider"):
        build_signer(
            pki.inter,
            pki.leaf.signer.public_key,
            "x",
            not_before=NOW,
            not_after=NOW + DAY,
            regions=["us"],
        )
    with pytest.raises(UsageError, match="outlive"):
        build_signer(
            pki.inter, pki.leaf.signer.public_key, "x", not_before=NOW, not_after=NOW + 5000 * DAY
        )
    with pytest.raises(UsageError, match="path length"):
        build_intermediate(
            pki.inter,
            pki.leaf.signer.public_key,
            parse_subject("CN=sub"),
            Constraints(CODE_SIGNING),
            not_before=NOW,
            not_after=NOW + DAY,
        )
