"""A certificate whose key is broken (one flipped bit, still parseable X.509) is a key error.

Found by hand (issue 13): every option that takes a key file ended in "internal error:
ValueError: Invalid key" (exit 3) when given such a certificate, because the certificate
parses but its ``public_key()`` does not. There is one path from a certificate to a key
(:func:`otaguard.crypto.keys.certificate_key`); each option is tried here through the CLI.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from helpers import CliResult, assert_one_line, cached_key, make_image
from helpers_pki import make_pki, sign_image
from otaguard.crypto.keys import (
    KeyType,
    certificate_key,
    load_public_key,
    private_key_pem,
    public_key_der,
    public_key_pem,
)
from otaguard.crypto.signer import KeySigner
from otaguard.errors import KeyLoadError, MalformedError
from otaguard.pki.anchor import apply_rotation, make_rotation, provision
from otaguard.pki.issue import build_root, parse_subject

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _certificate(key_type: KeyType, index: int = 40) -> x509.Certificate:
    signer = KeySigner(cached_key(key_type, index))
    return build_root(
        signer,
        parse_subject("CN=Broken Key Test"),
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3650),
    )


def _flips(cert: x509.Certificate) -> list[tuple[bytes, type[Exception]]]:
    """Every one-bit flip of the SubjectPublicKeyInfo that still parses but breaks the key.

    The flips are found by scanning, not hard-coded: which bits of a key's encoding
    give "parseable certificate, broken key" depends on the key type and its bytes.
    """
    der = cert.public_bytes(Encoding.DER)
    spki = public_key_der(cert.public_key())  # type: ignore[arg-type]
    start = der.index(spki)
    found: list[tuple[bytes, type[Exception]]] = []
    for bit in range(start * 8, (start + len(spki)) * 8):
        flipped = bytearray(der)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            broken = x509.load_der_x509_certificate(bytes(flipped))
        except ValueError:
            continue
        try:
            broken.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            found.append((bytes(flipped), type(exc)))
    return found


@pytest.fixture(scope="module")
def broken_pem() -> bytes:
    """An ECDSA P-256 certificate whose public point is off the curve ("Invalid key")."""
    for der, kind in _flips(_certificate(KeyType.ECDSA_P256)):
        if kind is ValueError:
            cert = x509.load_der_x509_certificate(der)
            return cert.public_bytes(Encoding.PEM)
    raise AssertionError("no flipped bit gives a parseable certificate with a broken key")


@pytest.mark.parametrize("key_type", list(KeyType)[:4], ids=lambda k: k.value)
def test_every_broken_key_flip_is_a_key_load_error(key_type: KeyType) -> None:
    flips = _flips(_certificate(key_type))
    assert flips  # the scan found cases to test (both ValueError and UnsupportedAlgorithm)
    for der, _ in flips:
        cert = x509.load_der_x509_certificate(der)
        with pytest.raises(KeyLoadError, match="broken or unsupported public key"):
            certificate_key(cert)
        with pytest.raises(KeyLoadError):
            load_public_key(cert.public_bytes(Encoding.PEM))
        with pytest.raises(KeyLoadError):
            load_public_key(der)


def test_a_good_certificate_gives_its_key() -> None:
    cert = _certificate(KeyType.ED25519)
    key = certificate_key(cert)
    assert public_key_der(key) == public_key_der(cached_key(KeyType.ED25519, 40).public_key())


@pytest.fixture
def files(tmp_path: Path, broken_pem: bytes) -> dict[str, Path]:
    key = cached_key(KeyType.ED25519, 41)
    out = {
        "cert": tmp_path / "broken.crt",
        "key": tmp_path / "release.pem",
        "pub": tmp_path / "release.pub",
        "payload": tmp_path / "fw.bin",
        "image": tmp_path / "fw.img",
    }
    out["cert"].write_bytes(broken_pem)
    out["key"].write_bytes(private_key_pem(key, None))
    out["pub"].write_bytes(public_key_pem(key.public_key()))
    out["payload"].write_bytes(b"firmware" * 100)
    out["image"].write_bytes(make_image(b"firmware" * 100, [key]))
    return out


def _repo(cli: Callable[..., CliResult], tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    result = cli("repo", "init", repo)
    assert result.code == 0, result.err
    return repo


SIGN = "--version 1.0.0 --security-counter 1 --hardware-id hw"

#: option -> its command line; {cert} is the broken certificate, {repo} a repository
CASES = {
    "key public": "key public {cert}",
    "sign --cert-chain": f"sign --key {{key}} {SIGN} --cert-chain {{cert}} {{payload}} {{out}}",
    "sign --key": f"sign --key {{cert}} {SIGN} {{payload}} {{out}}",
    "verify --trusted-key": "verify --trusted-key {cert} {image}",
    "verify --trusted-key --json": "verify --trusted-key {cert} --json --threshold 1 {image}",
    "verify --trusted-root": "verify --trusted-root {cert} {image}",
    "extract --trusted-key": "extract --trusted-key {cert} {image} {out}",
    "delta apply --trusted-key": "delta apply --trusted-key {cert} {image} {payload} {out}",
    "device init --trusted-key": "device init {dir}/dev --trusted-key {cert} --hardware-id hw",
    "repo init --root-key": "repo init {dir}/r2 --root-key {cert} --targets-key {key}",
    "repo init --targets-key": "repo init {dir}/r2 --root-key {key} --targets-key {cert}",
    "repo add-target --trusted-key": "repo add-target {repo} {image} --trusted-key {cert}",
    "repo delegate --key": "repo delegate {repo} --name eu --path eu/* --key {cert}",
    "repo sign --key": "repo sign {repo} targets --key {cert}",
    "repo publish --snapshot-key": "repo publish {repo} --snapshot-key {cert}",
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_key_option_refuses_a_broken_certificate_in_one_line(
    cli: Callable[..., CliResult], tmp_path: Path, files: dict[str, Path], case: str
) -> None:
    repo = _repo(cli, tmp_path) if "{repo}" in CASES[case] else None
    names = {name: str(path) for name, path in files.items()}
    args = CASES[case].format(repo=repo, dir=tmp_path, out=tmp_path / "out.img", **names)
    result = cli(*args.split())
    assert result.code == 2, (case, result.err)
    assert_one_line(result.err)
    assert "internal error" not in result.err
    assert str(files["cert"]) in result.err, result.err


def test_a_rotation_message_with_a_broken_new_root_key_is_malformed(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """Hostile input, not an operator's file: refused as malformed (exit 1), before its
    signature is even looked at, for every flip that breaks the key (an unknown key type
    used to end in "internal error: UnsupportedAlgorithm")."""
    root = _certificate(KeyType.ECDSA_P256)
    state = provision(root)
    signer = KeySigner(cached_key(KeyType.ECDSA_P256, 40))
    flips = _flips(_certificate(KeyType.ED25519, 42))
    for der, _ in flips:
        message = make_rotation(signer, x509.load_der_x509_certificate(der), 2)
        with pytest.raises(MalformedError, match="anchor rotation"):
            apply_rotation(state, message)
    (tmp_path / "root.crt").write_bytes(root.public_bytes(Encoding.PEM))
    made = cli("device", "init", tmp_path / "dev", "--trusted-key", tmp_path / "root.crt",
               "--hardware-id", "hw")  # fmt: skip
    assert made.code == 0, made.err
    (tmp_path / "rotation.bin").write_bytes(
        make_rotation(signer, x509.load_der_x509_certificate(flips[0][0]), 2)
    )
    result = cli("device", "rotate-anchor", tmp_path / "dev", tmp_path / "rotation.bin")
    assert result.code == 1, result.err
    assert_one_line(result.err)
    assert "rejected (malformed)" in result.err


def test_an_image_chain_with_a_broken_intermediate_key_is_rejected(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """Hostile input again: the intermediate comes from the image. A flip that breaks its
    key is a chain rejection (exit 1); an unknown key type used to be exit 3."""
    pki = make_pki()
    (tmp_path / "root.crt").write_bytes(pki.root.cert.public_bytes(Encoding.PEM))
    flips = _flips(pki.inter.cert)
    kinds = {kind for _, kind in flips}
    assert kinds == {ValueError, UnsupportedAlgorithm}
    leaf, signer = pki.leaf.cert.public_bytes(Encoding.DER), pki.leaf.signer
    assert isinstance(signer, KeySigner)
    for kind in kinds:  # the first ten flips of each kind (all of them: seconds, same paths)
        for broken in [flipped for flipped, k in flips if k is kind][:10]:
            (tmp_path / "fw.img").write_bytes(sign_image(signer, [leaf, broken]))
            result = cli("verify", "--trusted-root", tmp_path / "root.crt", tmp_path / "fw.img")
            assert result.code == 1, result.err
            assert_one_line(result.err)


def test_public_key_of_any_key_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from otaguard.crypto.keys import generate_private_key, private_key_pem, public_key_pem
    from otaguard.crypto.loader import public_key_of
    from otaguard.errors import KeyLoadError

    key = generate_private_key(KeyType.ECDSA_P256)
    files = {
        "pub.pem": public_key_pem(key.public_key()),
        "priv.pem": private_key_pem(key, None),
        "enc.pem": private_key_pem(key, b"pw"),
        "priv.der": key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        passphrase = b"pw" if name == "enc.pem" else None
        assert public_key_of(str(tmp_path / name), passphrase) == key.public_key(), name
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(KeyLoadError, match="junk"):
        public_key_of(str(tmp_path / "junk"))
