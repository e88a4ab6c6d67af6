"""``otaguard pki ... --json``: every subcommand reports what it made, as JSON."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509


def test_every_pki_command_reports_json(cli, tmp_path: Path) -> None:
    def ok(*args: object) -> dict:  # type: ignore[type-arg]
        result = cli("pki", *args, "--json")
        assert result.code == 0, (args, result.err)
        return result.json  # type: ignore[no-any-return]

    root = ok("init-root", "--out-dir", tmp_path / "root", "--subject", "CN=Json Root")
    cert = x509.load_pem_x509_certificate((tmp_path / "root" / "cert.pem").read_bytes())
    assert root == {
        "kind": "root",
        "subject": "CN=Json Root",
        "issuer": "CN=Json Root",
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "dir": str(tmp_path / "root"),
    }
    eu = ok(
        "issue-intermediate",
        "--ca",
        tmp_path / "root",
        "--out-dir",
        tmp_path / "eu",
        "--region",
        "eu",
        "--hardware-id",
        "hw",
    )
    assert (eu["kind"], eu["subject"], eu["issuer"]) == (
        "intermediate",
        "CN=eu Release CA",
        "CN=Json Root",
    )
    assert eu["constraints"] == {
        "purpose": "code-signing",
        "regions": ["eu"],
        "hardware_ids": ["hw"],
    }
    signer = ok(
        "issue-signer", "--ca", tmp_path / "eu", "--out-dir", tmp_path / "s1", "--name", "rel"
    )
    assert (signer["kind"], signer["name"], signer["issuer"]) == (
        "signer",
        "rel",
        "CN=eu Release CA",
    )
    stored = x509.load_pem_x509_certificates((tmp_path / "s1" / "chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in stored] == ["CN=rel", "CN=eu Release CA"]  # no root
    days = dt.datetime.fromisoformat(signer["not_after"]) - dt.datetime.fromisoformat(
        signer["not_before"]
    )
    assert days == dt.timedelta(days=90, minutes=5)  # 90 days from now, backdated 5 minutes
    ok(
        "issue-intermediate",
        "--ca",
        tmp_path / "root",
        "--out-dir",
        tmp_path / "devca",
        "--purpose",
        "device-identity",
    )
    device = ok(
        "issue-device",
        "--ca",
        tmp_path / "devca",
        "--out-dir",
        tmp_path / "vin",
        "--device-id",
        "VIN1",
    )
    assert (device["kind"], device["device_id"]) == ("device", "VIN1")
    revoked = ok(
        "revoke", "--ca", tmp_path / "eu", f"serial={signer['serial']}", "--reason", "superseded"
    )
    assert (revoked["serial"], revoked["reason"]) == (signer["serial"], "superseded")
    crl = ok("crl", "--ca", tmp_path / "eu", "--out", tmp_path / "eu.crl")
    assert crl["revoked"] == [signer["serial"]] and crl["crl_number"] == 1
    assert ok("crl", "--ca", tmp_path / "eu", "--out", tmp_path / "eu.crl")["crl_number"] == 2
    listed = x509.load_pem_x509_crl((tmp_path / "eu.crl").read_bytes())
    assert [f"{r.serial_number:X}" for r in listed] == [signer["serial"]]
    ok("init-root", "--out-dir", tmp_path / "root2", "--subject", "CN=Json Root 2")
    cross = ok(
        "cross-sign",
        "--ca",
        tmp_path / "root",
        "--new-root",
        tmp_path / "root2",
        "--out",
        tmp_path / "cross.pem",
    )
    assert (cross["kind"], cross["subject"], cross["issuer"]) == (
        "cross-certificate",
        "CN=Json Root 2",
        "CN=Json Root",
    )
    assert cross["out"] == str(tmp_path / "cross.pem")
    message = ok(
        "rotation-message",
        "--ca",
        tmp_path / "root",
        "--new-root",
        tmp_path / "root2",
        "--epoch",
        "2",
        "--out",
        tmp_path / "rot.bin",
    )
    assert message == {"new_root": "CN=Json Root 2", "epoch": 2, "out": str(tmp_path / "rot.bin")}
    drill = ok("drill", "--out-dir", tmp_path / "drill")
    assert drill["complete"] is True and [s["step"] for s in drill["steps"]] == [1, 2, 3, 4, 5]
    assert drill["steps"][1]["results"][0].startswith("ok      release 1.0.0 signed by S1: refused")


def test_text_output_is_unchanged(cli, tmp_path: Path) -> None:
    made = cli("pki", "init-root", "--out-dir", tmp_path / "root", "--subject", "CN=Text Root")
    cert = x509.load_pem_x509_certificate((tmp_path / "root" / "cert.pem").read_bytes())
    assert made.out == (
        f"root CA CN=Text Root (serial {cert.serial_number:X}) in {tmp_path / 'root'}\n"
    )
    revoked = cli("pki", "revoke", "--ca", tmp_path / "root", "0a:1b", "--reason", "superseded")
    assert revoked.out == "serial A1B revoked (superseded); publish it with 'otaguard pki crl'\n"
    drill = cli("pki", "drill", "--out-dir", tmp_path / "drill").out.splitlines()
    assert drill[0] == "step 1: offline root R1 -> EU intermediate -> signer S1"
    assert drill[-1] == "drill complete: every step ended as the incident plan requires"
