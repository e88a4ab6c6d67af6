"""The image commands end to end: exit codes, one-line errors, atomic outputs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line

OTAGUARD = [sys.executable, "-m", "otaguard.cli.main"]


@pytest.fixture
def keys(tmp_path: Path, cli) -> dict[str, Path]:
    paths = {}
    for name, algorithm in [("a", "ed25519"), ("b", "ecdsa-p256"), ("c", "ecdsa-p384")]:
        key = tmp_path / f"{name}.pem"
        assert (
            cli(
                "key",
                "generate",
                "--algorithm",
                algorithm,
                "--out",
                key,
                "--public-out",
                tmp_path / f"{name}.pub",
            ).code
            == 0
        )
        paths[name] = key
        paths[name + "_pub"] = tmp_path / f"{name}.pub"
    return paths


@pytest.fixture
def signed(tmp_path: Path, cli, keys) -> Path:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(os.urandom(50_000))
    image = tmp_path / "fw.img"
    result = cli(
        "sign",
        "--key",
        keys["a"],
        "--key",
        keys["b"],
        "--version",
        "1.4.0",
        "--security-counter",
        "7",
        "--hardware-id",
        "acme-ecu-v2",
        "--annotate",
        "git=abc",
        payload,
        image,
    )
    assert result.code == 0, result.err
    return image


def test_key_generate_is_private_and_encrypted(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("PW", "s3cret")
    key = tmp_path / "k.pem"
    result = cli(
        "key", "generate", "--algorithm", "rsa-3072", "--out", key, "--passphrase-env", "PW"
    )
    assert result.code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    shown = cli("key", "public", key, "--passphrase-env", "PW", "--out", tmp_path / "k.pub")
    assert shown.code == 0 and "key id: " in shown.out and "rsa-3072" in shown.out
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    no_pw = cli("key", "public", key)
    assert no_pw.code == 2 and "encrypted" in no_pw.err
    assert_one_line(no_pw.err)
    monkeypatch.delenv("PW")
    assert (
        cli(
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--out",
            tmp_path / "x.pem",
            "--passphrase-env",
            "PW",
        ).code
        == 2
    )


def test_verify_ok_text_and_json(cli, keys, signed) -> None:
    result = cli("verify", "--trusted-key", keys["a_pub"], signed)
    assert result.code == 0 and result.out.startswith("OK: native image")
    result = cli(
        "verify",
        "--trusted-key",
        keys["a_pub"],
        "--trusted-key",
        keys["b_pub"],
        "--threshold",
        "2",
        "--hardware-id",
        "acme-ecu-v2",
        "--min-security-counter",
        "7",
        "--json",
        signed,
    )
    assert result.code == 0
    report = json.loads(result.out)
    assert report["verified"] is True and len(report["signed_by"]) == 2
    assert report["annotations"] == {"git": "abc"}


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        (["--threshold", "3", "--trusted-key", "c_pub"], "threshold"),
        (["--hardware-id", "acme-ecu-v3"], "hardware-id"),
        (["--min-security-counter", "8"], "security-counter"),
    ],
)
def test_policy_rejections_name_the_check(cli, keys, signed, extra, check) -> None:
    args = [keys.get(a, a) for a in extra]
    result = cli(
        "verify", "--trusted-key", keys["a_pub"], "--trusted-key", keys["b_pub"], *args, signed
    )
    assert result.code == 1
    assert f"rejected ({check})" in result.err
    assert_one_line(result.err)


def test_unknown_key_signature_digest_truncated(tmp_path: Path, cli, keys, signed) -> None:
    result = cli("verify", "--trusted-key", keys["c_pub"], signed)
    assert result.code == 1 and "rejected (unknown-key)" in result.err
    data = bytearray(signed.read_bytes())
    data[-5] ^= 0x01  # inside the last signature
    bad_sig = tmp_path / "badsig.img"
    bad_sig.write_bytes(bytes(data))
    result = cli("verify", "--trusted-key", keys["b_pub"], bad_sig)
    assert result.code == 1 and "rejected (signature)" in result.err
    data = bytearray(signed.read_bytes())
    data[1000] ^= 0x01
    bad_payload = tmp_path / "badpayload.img"
    bad_payload.write_bytes(bytes(data))
    result = cli("verify", "--trusted-key", keys["a_pub"], "--json", bad_payload)
    assert result.code == 1 and "rejected (digest)" in result.err
    assert json.loads(result.out) == {
        "verified": False,
        "check": "digest",
        "error": "payload digest does not match the signed digest",
    }
    short = tmp_path / "short.img"
    short.write_bytes(signed.read_bytes()[:-30])
    result = cli("verify", "--trusted-key", keys["a_pub"], short)
    assert result.code == 1 and "rejected (truncated)" in result.err
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(b"\x00" * 100)
    result = cli("verify", "--trusted-key", keys["a_pub"], garbage)
    assert result.code == 1 and "rejected (malformed)" in result.err


def test_usage_errors_exit_2(tmp_path: Path, cli, keys, signed) -> None:
    cases = [
        ["verify", signed],  # no trusted key: never a success
        ["verify", "--trusted-key", keys["a_pub"], "--threshold", "2", signed],
        ["verify", "--trusted-key", keys["a_pub"], "--trusted-key", keys["a_pub"], signed],
        ["verify", "--trusted-key", tmp_path / "missing.pub", signed],
        ["verify", "--trusted-key", keys["a_pub"], tmp_path / "missing.img"],
        ["verify", "--trusted-key", signed, signed],  # not a key
        [
            "sign",
            "--key",
            keys["a"],
            "--version",
            "1.0",
            "--security-counter",
            "1",
            "--hardware-id",
            "x",
            signed,
            tmp_path / "o.img",
        ],
        [
            "sign",
            "--key",
            keys["a"],
            "--version",
            "1.0.0",
            "--hardware-id",
            "x",
            signed,
            tmp_path / "o.img",
        ],
        [
            "sign",
            "--key",
            keys["a"],
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            signed,
            tmp_path / "o.img",
        ],
        [
            "sign",
            "--key",
            keys["a"],
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            "--hardware-id",
            "x",
            "--annotate",
            "novalue",
            signed,
            tmp_path / "o.img",
        ],
        ["frobnicate"],
    ]
    for args in cases:
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert_one_line(result.err)
    assert not (tmp_path / "o.img").exists()


def test_extract_writes_only_after_verification(tmp_path: Path, cli, keys, signed) -> None:
    out = tmp_path / "payload.bin"
    assert cli("extract", "--trusted-key", keys["a_pub"], signed, out).code == 0
    assert len(out.read_bytes()) == 50_000
    data = bytearray(signed.read_bytes())
    data[2000] ^= 0x80
    tampered = tmp_path / "t.img"
    tampered.write_bytes(bytes(data))
    out.write_bytes(b"previous good payload")
    result = cli("extract", "--trusted-key", keys["a_pub"], tampered, out)
    assert result.code == 1 and "rejected (digest)" in result.err
    assert out.read_bytes() == b"previous good payload"  # untouched
    fresh = tmp_path / "fresh.bin"
    assert cli("extract", "--trusted-key", keys["a_pub"], tampered, fresh).code == 1
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_inspect_says_not_verified(cli, signed) -> None:
    result = cli("inspect", signed)
    assert result.code == 0 and result.out.startswith("NOT VERIFIED")
    report = json.loads(cli("inspect", "--json", signed).out)
    assert report["verified"] is False and len(report["signatures"]) == 2


def test_sign_is_reproducible_with_source_date_epoch(
    tmp_path: Path, cli, keys, monkeypatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"x" * 100)
    for name in ("1.img", "2.img"):
        assert (
            cli(
                "sign",
                "--key",
                keys["a"],
                "--version",
                "1.0.0",
                "--security-counter",
                "1",
                "--hardware-id",
                "x",
                payload,
                tmp_path / name,
            ).code
            == 0
        )
    assert (tmp_path / "1.img").read_bytes() == (
        tmp_path / "2.img"
    ).read_bytes()  # Ed25519 is deterministic
    report = json.loads(cli("inspect", "--json", tmp_path / "1.img").out)
    assert report["created"] == 1700000000


def test_real_process_never_prints_a_traceback(tmp_path: Path, keys) -> None:
    garbage = tmp_path / "g.img"
    garbage.write_bytes(b"OTAGUARD" + os.urandom(200))
    for args, code in [
        (["verify", "--trusted-key", str(keys["a_pub"]), str(garbage)], 1),
        (["inspect", str(garbage)], 1),
        (["verify", str(garbage)], 2),
        (
            [
                "sign",
                "--key",
                str(garbage),
                "--version",
                "1.0.0",
                "--security-counter",
                "1",
                "--hardware-id",
                "x",
                str(garbage),
                str(tmp_path / "o"),
            ],
            2,
        ),
    ]:
        proc = subprocess.run([*OTAGUARD, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
