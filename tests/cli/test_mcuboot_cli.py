"""MCUboot through the CLI: exit codes, extract/inspect, and certificate chains in vendor TLVs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers_pki import cli_hierarchy
from otaguard.cli.main import run


def _cli(*args: object) -> int:
    return run([str(a) for a in args])


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert (
        _cli("key", "generate", "--algorithm", "ecdsa-p256", "--out", key, "--public-out", pub) == 0
    )
    fw = tmp_path / "fw.bin"
    fw.write_bytes(os.urandom(30_000))
    img = tmp_path / "fw.mcuboot"
    assert (
        _cli(
            "sign",
            "--format",
            "mcuboot",
            "--key",
            key,
            "--version",
            "1.4.0+9",
            "--security-counter",
            "7",
            "--hardware-id",
            "acme-ecu-v2",
            "--pad-header",
            fw,
            img,
        )
        == 0
    )
    return {"key": key, "pub": pub, "fw": fw, "img": img, "dir": tmp_path}


def test_verify_json_and_extract(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _cli("verify", "--trusted-key", setup["pub"], "--json", setup["img"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "mcuboot" and report["security_counter"] == 7
    assert report["version"] == "1.4.0+9" and report["hardware_ids"] == ["acme-ecu-v2"]
    out = setup["dir"] / "payload.bin"
    assert _cli("extract", "--trusted-key", setup["pub"], setup["img"], out) == 0
    assert out.read_bytes() == setup["fw"].read_bytes()


def test_extract_of_tampered_image_leaves_nothing(setup: dict[str, Path]) -> None:
    data = bytearray(setup["img"].read_bytes())
    data[-10] ^= 0xFF  # inside the signature
    bad = setup["dir"] / "bad.mcuboot"
    bad.write_bytes(bytes(data))
    out = setup["dir"] / "out.bin"
    assert _cli("extract", "--trusted-key", setup["pub"], bad, out) == 1
    assert not out.exists()
    assert [p.name for p in setup["dir"].iterdir() if p.name.startswith(".out")] == []


def test_inspect_says_not_verified(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _cli("inspect", setup["img"]) == 0
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "SEC_CNT" in out and "OTAGUARD_HARDWARE_IDS" in out
    assert _cli("inspect", "--json", setup["img"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_rejections_and_usage_errors(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    img, pub = setup["img"], setup["pub"]
    assert _cli("verify", img) == 2  # no trusted key: never a success
    assert _cli("verify", "--trusted-key", pub, "--min-security-counter", "8", img) == 1
    assert "rejected (security-counter)" in capsys.readouterr().err
    assert _cli("verify", "--trusted-key", pub, "--min-version", "1.5.0", img) == 1
    assert "rejected (version)" in capsys.readouterr().err
    assert _cli("verify", "--trusted-key", pub, "--min-version", "1.x", img) == 2
    assert _cli("verify", "--format", "native", "--trusted-key", pub, img) == 1
    sign = ["sign", "--format", "mcuboot", "--key", setup["key"]]
    out = setup["dir"] / "x"
    assert _cli(*sign, "--version", "256.0.0", "--pad-header", setup["fw"], out) == 2
    assert (
        _cli(*sign, "--version", "1.0.0", "--annotate", "a=b", "--pad-header", setup["fw"], out)
        == 2
    )
    assert _cli(*sign, "--version", "1.0.0", setup["fw"], out) == 2  # no zero header room
    assert not (setup["dir"] / "x").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--pad-header" in err


def test_certificate_chain_in_protected_tlvs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 4: an MCUboot image signed under the PKI carries its chain and signing time."""
    pki = cli_hierarchy(tmp_path, "root")
    fw = tmp_path / "fw.bin"
    fw.write_bytes(os.urandom(8000))
    img = tmp_path / "fw.mcuboot"
    sign = [
        "sign",
        "--format",
        "mcuboot",
        "--key",
        pki["signer"] / "key.pem",  # type: ignore[operator]
        "--cert-chain",
        pki["signer"] / "chain.pem",  # type: ignore[operator]
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
        "--pad-header",
    ]
    assert _cli(*sign, "--hardware-id", "acme-ecu-v2", fw, img) == 0
    root = pki["root"] / "cert.pem"  # type: ignore[operator]
    capsys.readouterr()
    assert _cli("verify", "--trusted-root", root, "--region", "eu", "--json", img) == 0
    assert json.loads(capsys.readouterr().out)["certificate_chain"][-1] == "CN=Acme root"
    assert _cli("verify", "--trusted-root", root, "--region", "us", img) == 1
    # A chain limited to a hardware id does not cover an image that names none.
    bare = tmp_path / "bare.mcuboot"
    assert _cli(*sign, fw, bare) == 0
    capsys.readouterr()
    assert _cli("verify", "--trusted-root", root, "--region", "eu", bare) == 1
    assert "rejected (constraint)" in capsys.readouterr().err
    # Revocation applies to MCUboot images too.
    serial = subprocess.run(
        ["openssl", "x509", "-in", pki["signer"] / "cert.pem", "-noout", "-serial"],  # type: ignore[operator]
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert _cli("pki", "revoke", "--ca", pki["ca"], serial, "--reason", "key-compromise") == 0
    assert _cli("pki", "crl", "--ca", pki["ca"], "--out", tmp_path / "eu.crl") == 0
    capsys.readouterr()
    assert (
        _cli("verify", "--trusted-root", root, "--region", "eu", "--crl", tmp_path / "eu.crl", img)
        == 1
    )
    assert "rejected (revoked)" in capsys.readouterr().err
    # imgtool still accepts the image: the chain lives in ordinary protected TLVs.
    from helpers_mcuboot import run_imgtool

    assert run_imgtool("verify", "-k", pki["signer"] / "key.pem", img).returncode == 0  # type: ignore[operator]
