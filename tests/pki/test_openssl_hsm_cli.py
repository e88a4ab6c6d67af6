"""Interop and operations: openssl accepts our chains and CRLs, HSM CA keys, the CLI, the drill."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import hsm_uri
from otaguard.cli.main import run
from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.pkcs11 import Pkcs11Signer, generate_pkcs11_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import OtaguardError
from otaguard.pki import anchor, constraints
from otaguard.pki.constraints import CODE_SIGNING, Constraints
from otaguard.pki.drill import run_drill
from otaguard.pki.issue import (
    Issuer,
    Revocation,
    build_crl,
    build_intermediate,
    build_root,
    build_signer,
    parse_subject,
)

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def _write(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    return path


def _openssl_verify(
    tmp: Path,
    root: x509.Certificate,
    inter: x509.Certificate,
    leaf: x509.Certificate,
    crls: list[x509.CertificateRevocationList] = (),  # type: ignore[assignment]
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "openssl",
        "verify",
        "-CAfile",
        str(_write(tmp / "root.pem", root)),
        "-untrusted",
        str(_write(tmp / "inter.pem", inter)),
    ]
    if crls:
        crl_file = tmp / "crls.pem"
        crl_file.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in crls))
        cmd += ["-crl_check_all", "-CRLfile", str(crl_file)]
    return subprocess.run(
        [*cmd, str(_write(tmp / "leaf.pem", leaf))], capture_output=True, text=True, check=False
    )


def _hierarchy(root_signer, inter_signer, leaf_signer):
    root = Issuer(
        build_root(
            root_signer,
            parse_subject("CN=Interop Root,O=Acme"),
            not_before=NOW - DAY,
            not_after=NOW + 3650 * DAY,
        ),
        root_signer,
    )
    inter = Issuer(
        build_intermediate(
            root,
            inter_signer.public_key,
            parse_subject("CN=Interop EU CA"),
            Constraints(CODE_SIGNING, frozenset({"eu"}), frozenset({"hw"})),
            not_before=NOW - DAY,
            not_after=NOW + 1000 * DAY,
        ),
        inter_signer,
    )
    leaf = build_signer(
        inter, leaf_signer.public_key, "release", not_before=NOW - DAY, not_after=NOW + 90 * DAY
    )
    return root, inter, leaf


@pytest.mark.parametrize("kind", list(KeyType), ids=lambda k: k.value)
def test_openssl_verifies_our_chains_and_crls(tmp_path: Path, kind: KeyType) -> None:
    signers = [KeySigner(generate_private_key(kind)) for _ in range(3)]
    root, inter, leaf = _hierarchy(*signers)
    proc = _openssl_verify(tmp_path, root.cert, inter.cert, leaf)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
    empty_inter = build_crl(inter, [], this_update=NOW - DAY, next_update=NOW + DAY, number=1)
    empty_root = build_crl(root, [], this_update=NOW - DAY, next_update=NOW + DAY, number=1)
    assert (
        _openssl_verify(tmp_path, root.cert, inter.cert, leaf, [empty_inter, empty_root]).returncode
        == 0
    )
    revoked = build_crl(
        inter,
        [Revocation(leaf.serial_number, NOW - DAY, "key-compromise")],
        this_update=NOW - DAY,
        next_update=NOW + DAY,
        number=2,
    )
    proc = _openssl_verify(tmp_path, root.cert, inter.cert, leaf, [revoked, empty_root])
    assert proc.returncode != 0 and "revoked" in (proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    "kind", [KeyType.ECDSA_P256, KeyType.RSA_4096, KeyType.ED25519], ids=lambda k: k.value
)
def test_hsm_ca_keys_sign_certificates_and_crls(
    tmp_path: Path, softhsm: dict[str, str], kind: KeyType
) -> None:
    uri = hsm_uri(softhsm, f"ca-{kind.value}")
    generate_pkcs11_key(uri, kind)
    with Pkcs11Signer(uri) as hsm:
        root, inter, leaf = _hierarchy(
            hsm,
            KeySigner(generate_private_key(KeyType.ECDSA_P256)),
            KeySigner(generate_private_key(KeyType.ED25519)),
        )
        crl = build_crl(
            root,
            [Revocation(inter.cert.serial_number, NOW - DAY, "ca-compromise")],
            this_update=NOW - DAY,
            next_update=NOW + DAY,
            number=1,
        )
    assert _openssl_verify(tmp_path, root.cert, inter.cert, leaf).returncode == 0
    assert crl.is_signature_valid(root.cert.public_key())
    proc = _openssl_verify(
        tmp_path,
        root.cert,
        inter.cert,
        leaf,
        [crl, build_crl(inter, [], this_update=NOW - DAY, next_update=NOW + DAY, number=1)],
    )
    assert proc.returncode != 0 and "revoked" in (proc.stdout + proc.stderr)


def test_drill_end_to_end(tmp_path: Path) -> None:
    lines = list(run_drill(tmp_path, now=NOW))
    text = "\n".join(lines)
    assert lines[-1].startswith("drill complete")
    assert text.count("refused (revoked") == 3
    assert "refused (chain" in text and "anchor rotation signed by R2 itself: refused" in text
    assert (tmp_path / "anchor-rotation-epoch2.bin").exists()


def _cli(*args: object) -> int:
    return run([str(a) for a in args])


def test_cli_hierarchy_sign_verify_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], softhsm: dict[str, str]
) -> None:
    root_uri = hsm_uri(softhsm, "cli-root")
    assert _cli("key", "generate", "--algorithm", "ecdsa-p384", "--out", root_uri) == 0
    assert (
        _cli(
            "pki",
            "init-root",
            "--out-dir",
            tmp_path / "root",
            "--subject",
            "CN=Acme Root CA",
            "--key",
            root_uri,
        )
        == 0
    )
    assert not (tmp_path / "root" / "key.pem").exists()
    assert (tmp_path / "root" / "key.uri").read_text().startswith("pkcs11:")
    assert (
        _cli("pki", "init-root", "--out-dir", tmp_path / "root", "--subject", "CN=x") == 2
    )  # no overwrite
    assert (
        _cli(
            "pki",
            "issue-intermediate",
            "--ca",
            tmp_path / "root",
            "--out-dir",
            tmp_path / "eu",
            "--region",
            "eu",
            "--hardware-id",
            "acme-ecu-v2",
        )
        == 0
    )
    assert (
        _cli(
            "pki",
            "issue-signer",
            "--ca",
            tmp_path / "eu",
            "--out-dir",
            tmp_path / "s1",
            "--name",
            "release-2026q4",
            "--days",
            "90",
        )
        == 0
    )
    assert (tmp_path / "s1" / "key.pem").stat().st_mode & 0o777 == 0o600
    proc = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            tmp_path / "root" / "cert.pem",
            "-untrusted",
            tmp_path / "eu" / "cert.pem",
            tmp_path / "s1" / "cert.pem",
        ],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"\x00\x01" * 3000)
    img = tmp_path / "fw.img"
    assert (
        _cli(
            "sign",
            "--key",
            tmp_path / "s1" / "key.pem",
            "--cert-chain",
            tmp_path / "s1" / "chain.pem",
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            "--hardware-id",
            "acme-ecu-v2",
            fw,
            img,
        )
        == 0
    )
    capsys.readouterr()
    root_pem = tmp_path / "root" / "cert.pem"
    assert _cli("verify", "--trusted-root", root_pem, "--region", "eu", "--json", img) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["certificate_chain"][-1] == "CN=Acme Root CA"
    assert _cli("verify", "--trusted-root", root_pem, "--region", "us", img) == 1
    assert "rejected (constraint)" in capsys.readouterr().err
    assert (
        _cli(
            "verify", "--trusted-root", root_pem, "--trusted-key", tmp_path / "s1" / "cert.pem", img
        )
        == 2
    )
    serial = subprocess.run(
        ["openssl", "x509", "-in", tmp_path / "s1" / "cert.pem", "-noout", "-serial"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert _cli("pki", "revoke", "--ca", tmp_path / "eu", serial, "--reason", "key-compromise") == 0
    assert _cli("pki", "revoke", "--ca", tmp_path / "eu", serial, "--reason", "key-compromise") == 2
    assert _cli("pki", "crl", "--ca", tmp_path / "eu", "--out", tmp_path / "eu.crl") == 0
    capsys.readouterr()
    assert (
        _cli(
            "verify",
            "--trusted-root",
            root_pem,
            "--region",
            "eu",
            "--crl",
            tmp_path / "eu.crl",
            img,
        )
        == 1
    )
    assert "rejected (revoked)" in capsys.readouterr().err
    # A chain whose leaf is not the signing key is refused at signing time.
    assert (
        _cli(
            "sign",
            "--key",
            tmp_path / "eu" / "key.pem",
            "--cert-chain",
            tmp_path / "s1" / "chain.pem",
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            "--hardware-id",
            "acme-ecu-v2",
            fw,
            tmp_path / "x.img",
        )
        == 2
    )
    assert (
        _cli(
            "pki",
            "issue-device",
            "--ca",
            tmp_path / "eu",
            "--out-dir",
            tmp_path / "dev",
            "--device-id",
            "VIN1",
            "--days",
            "30",
        )
        == 2
    )  # a code-signing CA issues no device identities
    assert (
        _cli(
            "pki",
            "issue-intermediate",
            "--ca",
            tmp_path / "root",
            "--out-dir",
            tmp_path / "devca",
            "--purpose",
            "device-identity",
        )
        == 0
    )
    assert (
        _cli(
            "pki",
            "issue-device",
            "--ca",
            tmp_path / "devca",
            "--out-dir",
            tmp_path / "dev",
            "--device-id",
            "WVW123",
        )
        == 0
    )
    assert _cli("pki", "drill", "--out-dir", tmp_path / "drill") == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_constraint_and_anchor_parsers_only_raise_our_errors(data: bytes) -> None:
    try:
        constraints.decode(data)
    except OtaguardError:
        pass
    state = anchor.AnchorState(1, ())
    try:
        anchor.apply_rotation(state, anchor.MAGIC + data)
    except OtaguardError:
        pass


@given(
    st.sets(st.text(min_size=1, max_size=10), max_size=5),
    st.sets(st.text(min_size=1, max_size=10), max_size=5),
    st.booleans(),
    st.booleans(),
)
def test_constraints_round_trip(regions: set[str], hws: set[str], has_r: bool, has_h: bool) -> None:
    value = Constraints(
        CODE_SIGNING, frozenset(regions) if has_r else None, frozenset(hws) if has_h else None
    )
    assert constraints.decode(constraints.encode(value)) == value
