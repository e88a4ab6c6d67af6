"""``otaguard.pki.ca``: a CA's operations as a library, with an explicit clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from otaguard.crypto.keys import KeyType, private_key_pem
from otaguard.errors import UsageError
from otaguard.pki.ca import (
    SKEW,
    certificate_report,
    constraints_report,
    cross_sign_root,
    init_root,
    intermediate_name,
    issue_device,
    issue_intermediate,
    issue_signer,
    new_key,
    open_ca,
    revocation_report,
    revoke,
    write_crl,
    write_rotation,
)
from otaguard.pki.store import load_ca_dir, read_crl

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _root(path: Path, subject: str) -> Path:
    key = new_key(None, KeyType.ECDSA_P256, None)
    init_root(path, subject, key, years=20, path_length=None, now=NOW)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _root(tmp_path / "root", "CN=Test Root")


def test_a_hierarchy_with_validity_from_the_given_clock(root: Path, tmp_path: Path) -> None:
    ca, issuer = open_ca(root, None)
    assert ca.cert.not_valid_before_utc == NOW - SKEW
    inter = issue_intermediate(
        ca,
        issuer,
        tmp_path / "eu",
        new_key(None, KeyType.ECDSA_P256, None),
        subject=None,
        regions=["EU"],
        hardware_ids=[],
        purpose="code-signing",
        years=None,
        path_length=0,
        now=NOW,
    )
    assert inter.subject.rfc4514_string() == "CN=EU Release CA"
    assert inter.not_valid_after_utc == NOW + dt.timedelta(days=365 * 5)  # code signing: 5 y
    eu, eu_issuer = open_ca(tmp_path / "eu", None)
    signer = issue_signer(
        eu,
        eu_issuer,
        tmp_path / "signer",
        new_key(None, KeyType.ED25519, None),
        name="release-q4",
        regions=[],
        hardware_ids=[],
        days=90,
        now=NOW,
    )
    assert signer.not_valid_after_utc == NOW + dt.timedelta(days=90)
    stored = load_ca_dir(tmp_path / "signer")
    assert [c.subject for c in stored.chain] == [signer.subject, inter.subject]  # no root
    report = certificate_report("signer", signer, dir="d")
    assert report["serial"] == f"{signer.serial_number:X}" and report["dir"] == "d"


def test_default_intermediate_names() -> None:
    assert intermediate_name(None, [], "device-identity") == "CN=Global Device CA"
    assert intermediate_name(None, ["EU", "UK"], "code-signing") == "CN=EU/UK Release CA"
    assert intermediate_name("CN=Mine", ["EU"], "code-signing") == "CN=Mine"


def test_new_key_is_stored_encrypted_or_as_given(tmp_path: Path) -> None:
    fresh = new_key(None, KeyType.ED25519, b"secret")
    assert b"ENCRYPTED" in fresh.storage["key_pem"]
    existing = new_key(None, KeyType.ED25519, None).storage["key_pem"]
    path = tmp_path / "k.pem"
    path.write_bytes(existing)
    assert new_key(str(path), KeyType.ECDSA_P384, None).storage == {"key_pem": existing}


@pytest.mark.parametrize(
    ("serial", "why"),
    [("0", "outside 1 to 2"), ("1" + "0" * 40, "outside 1 to 2"), ("zz", "not a hex serial")],
)
def test_revoke_refuses_serials_outside_rfc_5280(root: Path, serial: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        revoke(root, serial, "key-compromise", now=NOW)
    done = write_crl(root, None, str(root.parent / "crl.pem"), days=30, now=NOW)
    assert done.revoked == []  # the refused serial never reached the CA's state


def test_crl_numbers_only_grow_and_an_input_is_never_replaced(root: Path, tmp_path: Path) -> None:
    device = issue_device(
        *open_ca(root, None),
        tmp_path / "dev",
        new_key(None, KeyType.ECDSA_P256, None),
        device_id="VIN1",
        days=10,
        now=NOW,
    )
    revoke(root, f"{device.serial_number:X}", "key-compromise", now=NOW)
    first = write_crl(root, None, str(tmp_path / "a.pem"), days=30, now=NOW)
    second = write_crl(root, None, str(tmp_path / "b.pem"), days=30, now=NOW)
    assert second.number == first.number + 1
    assert [r.serial for r in second.revoked] == [device.serial_number]
    crl = read_crl(str(tmp_path / "b.pem"))
    assert crl.get_revoked_certificate_by_serial_number(device.serial_number) is not None
    with pytest.raises(UsageError, match="refusing to replace an input"):
        write_crl(root, None, str(root / "cert.pem"), days=30, now=NOW)
    assert write_crl(root, None, str(tmp_path / "c.pem"), days=30, now=NOW).number == 3


def test_cross_sign_and_rotation_write_their_outputs(root: Path, tmp_path: Path) -> None:
    _root(tmp_path / "new", "CN=New Root")
    cert, new = cross_sign_root(
        root, None, tmp_path / "new", str(tmp_path / "x.pem"), years=5, now=NOW
    )
    assert cert.subject == new.subject and cert.issuer.rfc4514_string() == "CN=Test Root"
    assert x509.load_pem_x509_certificate((tmp_path / "x.pem").read_bytes()) == cert
    assert write_rotation(root, None, tmp_path / "new", 2, str(tmp_path / "rot.bin")) == new
    assert (tmp_path / "rot.bin").stat().st_size > 0


def test_a_key_file_of_the_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    from otaguard.crypto.keys import generate_private_key
    from otaguard.errors import KeyLoadError

    path = tmp_path / "k.pem"
    path.write_bytes(private_key_pem(generate_private_key(KeyType.ED25519), b"right"))
    with pytest.raises(KeyLoadError, match=r"k\.pem"):
        new_key(str(path), KeyType.ED25519, b"wrong")


def test_the_reports_of_a_revocation_and_its_crl(root: Path, tmp_path: Path) -> None:
    revocation = revoke(root, "1F", "superseded", now=NOW)
    assert revocation_report("ca-dir", revocation) == {
        "ca": "ca-dir",
        "serial": "1F",
        "reason": "superseded",
        "date": NOW.isoformat(),
    }
    done = write_crl(root, None, str(tmp_path / "crl.pem"), days=7, now=NOW)
    assert done.to_json("ca-dir", "crl.pem") == {
        "ca": "ca-dir",
        "out": "crl.pem",
        "revoked": ["1F"],
        "crl_number": done.number,
        "this_update": NOW.isoformat(),
        "next_update": (NOW + dt.timedelta(days=7)).isoformat(),
    }


def test_constraints_report_none_where_unconstrained() -> None:
    assert constraints_report("code-signing", ["us", "eu"], []) == {
        "purpose": "code-signing",
        "regions": ["eu", "us"],
        "hardware_ids": None,
    }
