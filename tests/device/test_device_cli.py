"""``otaguard device`` end to end: the update story, exit codes, power cuts through the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from helpers import assert_one_line
from helpers_pki import DAY, NOW, der, make_pki, sign_image
from otaguard.pki.issue import Revocation, build_crl

from .conftest import init_device_dir


def test_update_story(cli, tmp_path: Path, files) -> None:
    dev = tmp_path / "dev"
    init_device_dir(cli, dev, files)
    status = cli("device", "status", dev, "--json").json
    assert status["fwu_state"] == "FAILED" and status["fuse_counter"] == 0
    assert status["fuses_left"] == 64
    installed = cli("device", "install", dev, files["v1"], "--json")
    assert installed.code == 0 and installed.json["flash_ops"] > 0 and installed.json["slot"] == "a"
    booted = cli("device", "boot", dev, "--json").json
    assert {k: booted[k] for k in ("slot", "version", "security_counter", "state")} == {
        "slot": "a",
        "version": "1.0.0",
        "security_counter": 1,
        "state": "trial",
    }
    confirmed = cli("device", "confirm", dev)
    assert confirmed.code == 0 and "permanent" in confirmed.out
    assert cli("device", "boot", dev, "--json").json["state"] == "confirmed"
    # v2 installed, never confirmed: three trial boots, then the revert to v1.
    assert cli("device", "install", dev, files["v2"]).code == 0
    assert cli("device", "status", dev, "--json").json["fwu_state"] == "STAGED"
    states = [cli("device", "boot", dev, "--json").json for _ in range(4)]
    assert [(s["slot"], s["state"]) for s in states] == [("b", "trial")] * 3 + [("a", "confirmed")]
    assert states[-1]["rejected"][0]["check"] == "tries-exhausted"
    status = cli("device", "status", dev, "--json").json
    assert status["fwu_state"] == "READY" and status["fuse_counter"] == 1
    assert status["slots"]["b"]["state"] == "unbootable"
    assert status["slots"]["b"]["components"]["main"]["version"] == "2.0.0"
    text = cli("device", "status", dev)
    assert text.code == 0 and "slot a: confirmed" in text.out


def test_refusals_exit_1_usage_errors_exit_2(cli, tmp_path: Path, files, kit) -> None:
    from helpers import cached_key
    from otaguard.crypto.keys import KeyType

    dev = tmp_path / "dev"
    init_device_dir(cli, dev, files)
    for step in (("install", files["v2"]), ("boot",), ("confirm",), ("boot",)):
        assert cli("device", step[0], dev, *step[1:]).code == 0
    rollback = cli("device", "install", dev, files["v1"])
    assert rollback.code == 1 and "rejected (security-counter)" in rollback.err
    assert_one_line(rollback.err)
    forged = tmp_path / "forged.img"
    forged.write_bytes(kit.image(9, keys=[cached_key(KeyType.ED25519, 7)]))
    refused = cli("device", "install", dev, forged)
    assert refused.code == 1 and "unknown-key" in refused.err
    # The attacker writes v1 into the other slot and points boot control at it.
    raw = cli("device", "flash-raw", dev, "--slot", "b", "--activate", files["v1"])
    assert raw.code == 0 and "without any check" in raw.out
    booted = cli("device", "boot", dev, "--json")
    assert booted.code == 0 and booted.json["version"] == "2.0.0"
    assert booted.json["rejected"][0] == {
        "slot": "b",
        "check": "security-counter",
        "reason": "security counter 1 is below 2 (rollback)",
    }
    # The attacker now overwrites the good slot too: recovery, exit 1, nothing runs.
    assert cli("device", "flash-raw", dev, "--slot", "a", forged).code == 0
    recovery = cli("device", "boot", dev, "--json")
    assert recovery.code == 1 and recovery.json["state"] == "recovery"
    assert "rejected (recovery)" in recovery.err
    assert_one_line(recovery.err)
    confirm = cli("device", "confirm", dev)
    assert confirm.code == 2 and "boot it first" in confirm.err
    for args in (
        ("device", "init", dev, "--trusted-key", files["pub"], "--hardware-id", "x"),
        ("device", "status", tmp_path / "nowhere"),
        ("device", "init", tmp_path / "d2", "--trusted-key", files["v1"], "--hardware-id", "x"),
        (
            "device",
            "init",
            tmp_path / "d3",
            "--trusted-key",
            files["pub"],
            "--hardware-id",
            "x",
            "--geometry",
            "nope",
        ),
        ("device", "install", dev, tmp_path / "missing.img"),
        ("device", "install", dev, files["v3"], "--power-cut-at", "-1"),
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert_one_line(result.err)


def test_fuse_budget_through_the_cli(cli, tmp_path: Path, files) -> None:
    dev = tmp_path / "dev"
    init_device_dir(cli, dev, files, "--fuse-bits", "2", "--counter-backend", "fuses")
    result = cli("device", "install", dev, files["v3"], "--json")
    assert result.code == 1 and "fuse-budget" in result.err
    assert cli("device", "install", dev, files["v2"]).code == 0


def _copy(base: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    return dest


@pytest.mark.slow
def test_power_cut_before_every_operation_through_the_cli(cli, tmp_path: Path, files) -> None:
    """Install v2 over a confirmed v1, then boot and confirm it, cutting each operation."""
    base = tmp_path / "base"
    init_device_dir(cli, base, files, "--geometry", "nor-4k-sector-write")
    for args in (("install", files["v1"]), ("boot",), ("confirm",), ("boot",)):
        assert cli("device", args[0], base, *args[1:]).code == 0
    probe = _copy(base, tmp_path / "probe")
    total = cli("device", "install", probe, files["v2"], "--json").json["flash_ops"]
    assert 5 < total < 40
    for n in range(total):
        for fault in ("--power-cut-at", "--tear-at"):
            dev = _copy(base, tmp_path / "dev")
            cut = cli("device", "install", dev, files["v2"], fault, str(n), "--json")
            assert (
                cut.code == 0
                and cut.json["power_cut"]
                and cut.json["flash_ops"] == n + (fault == "--tear-at")
            )
            booted = cli("device", "boot", dev, "--json").json
            assert booted["version"] in ("1.0.0", "2.0.0"), (fault, n)
            assert cli("device", "status", dev, "--json").json["fuse_counter"] == 1
    # Boot and confirm of the trial, cut at each of their operations.
    trial = _copy(base, tmp_path / "trial")
    assert cli("device", "install", trial, files["v2"]).code == 0
    for command in ("boot", "confirm"):
        staged = _copy(trial, tmp_path / "staged")
        if command == "confirm":
            assert cli("device", "boot", staged).code == 0
        ops = cli("device", command, staged, "--json").json["flash_ops"]
        assert ops > 0
        for n in range(ops):
            dev = _copy(trial, tmp_path / "dev")
            if command == "confirm":
                cli("device", "boot", dev)
            assert cli("device", command, dev, "--power-cut-at", str(n)).code == 0
            booted = cli("device", "boot", dev, "--json").json
            assert booted["version"] in ("1.0.0", "2.0.0") and booted["state"] != "recovery"
            fuses = cli("device", "status", dev, "--json").json["fuse_counter"]
            assert fuses <= booted["security_counter"]


def test_root_certificate_anchor_and_learned_crl(cli, tmp_path: Path, kit) -> None:
    pki = make_pki()
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.cert.public_bytes(Encoding.PEM))
    image = tmp_path / "chained.img"
    image.write_bytes(sign_image(pki.leaf.signer, der(pki.leaf.cert, pki.inter.cert)))
    dev = tmp_path / "dev"
    args = ("--trusted-key", root, "--hardware-id", "acme-ecu-v2", "--slot-size", "32768")
    assert cli("device", "init", dev, *args, "--region", "eu").code == 0
    assert cli("device", "install", dev, image).code == 0
    assert cli("device", "boot", dev, "--json").json["state"] == "trial"
    crl = build_crl(
        pki.inter,
        [Revocation(pki.leaf.cert.serial_number, NOW, "key-compromise")],
        this_update=NOW,
        next_update=NOW + DAY,
        number=1,
    )
    crl_file = tmp_path / "eu.crl"
    crl_file.write_bytes(crl.public_bytes(Encoding.PEM))
    chain = tmp_path / "inter.pem"
    chain.write_bytes(pki.inter.cert.public_bytes(Encoding.PEM))
    learned = cli("device", "learn-crl", dev, crl_file, "--issuer-chain", chain)
    assert learned.code == 0, learned.err
    replay = cli("device", "learn-crl", dev, crl_file, "--issuer-chain", chain)
    assert replay.code == 1 and "crl-rollback" in replay.err
    revoked = cli("device", "boot", dev, "--json")
    assert revoked.code == 1 and revoked.json["rejected"][0]["check"] == "revoked"
    us = tmp_path / "us"
    assert cli("device", "init", us, *args, "--region", "us").code == 0
    assert cli("device", "install", us, image).code == 1


def test_multi_component_set_through_the_cli(cli, tmp_path: Path, files, kit) -> None:
    radio = tmp_path / "radio.img"
    radio.write_bytes(kit.image(1, hardware_ids=("acme-radio-v1",)))
    dev = tmp_path / "dev"
    init_device_dir(cli, dev, files, "--component", "radio=acme-radio-v1")
    missing = cli("device", "install", dev, files["v1"])
    assert missing.code == 2 and "carry over" in missing.err
    result = cli("device", "install", dev, files["v1"], f"radio={radio}", "--json")
    assert result.code == 0 and set(result.json["components"]) == {"main", "radio"}
    booted = cli("device", "boot", dev, "--json").json
    assert booted["components"]["radio"]["version"] == "1.0.0"
    assert cli("device", "confirm", dev).code == 0
    fuses = cli("device", "status", dev, "--json").json["fuses"]
    assert fuses["radio"]["counter"] == 1 and fuses["main"]["counter"] == 1


def test_subprocess_entry_point_has_no_traceback(tmp_path: Path, files) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "otaguard.cli.main", "device", "boot", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert_one_line(proc.stderr)


def test_init_json(cli, tmp_path: Path, files) -> None:
    dev = tmp_path / "dev"
    args = ("--trusted-key", files["pub"], "--hardware-id", "acme-ecu-v2", "--slot-size", "32768")
    made = cli("device", "init", dev, *args, "--component", "radio=acme-radio", "--json")
    assert made.code == 0, made.err
    assert made.json == {
        "device": str(dev),
        "geometry": {
            "name": "nor-4k",
            "sector_size": 4096,
            "write_align": 1,
            "erased": 255,
            "program_size": 256,
            "slot_size": 32768,
        },
        "anchors": 1,
        "components": {"main": "acme-ecu-v2", "radio": "acme-radio"},
        "counter_backend": "fuses",
        "fuse_bits": 64,
        "trial_tries": 3,
        "strict_counter": False,
        "region": None,
    }
    assert cli("device", "status", dev, "--json").json["geometry"] == made.json["geometry"]
    text = cli("device", "init", tmp_path / "d2", *args)
    assert text.out == (
        f"device {tmp_path / 'd2'}: nor-4k flash (4096-byte sectors, erased 0xff), "
        "1 anchor(s) in OTP, components main\n"
    )
