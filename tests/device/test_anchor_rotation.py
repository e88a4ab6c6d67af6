"""Root rotation reaches the device: OTP gets the new anchor only through the old root's message,
and never while the running firmware would not boot under the new root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers_pki import cli_hierarchy
from otaguard.cli.main import run


def _cli(*args: object) -> int:
    return run([str(a) for a in args])


def _hierarchy(tmp: Path, name: str) -> Path:
    return cli_hierarchy(tmp, name)["root"]  # type: ignore[return-value]


def _image(tmp: Path, name: str, counter: int, extra_chain: Path | None = None) -> Path:
    fw = tmp / f"fw-{name}-{counter}.bin"
    fw.write_bytes(os.urandom(6000))
    out = tmp / f"fw-{name}-{counter}.img"
    signer = tmp / f"{name}-signer"
    chain = signer / "chain.pem"
    if extra_chain is not None:
        chain = tmp / f"{name}-chain-plus.pem"
        chain.write_bytes((signer / "chain.pem").read_bytes() + extra_chain.read_bytes())
    assert (
        _cli(
            "sign",
            "--key",
            signer / "key.pem",
            "--cert-chain",
            chain,
            "--version",
            f"{counter}.0.0",
            "--security-counter",
            counter,
            "--hardware-id",
            "acme-ecu-v2",
            fw,
            out,
        )
        == 0
    )
    return out


def _boot_confirm(dev: Path) -> None:
    assert _cli("device", "boot", dev) == 0
    assert _cli("device", "confirm", dev) == 0


def test_device_root_rotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r1, r2 = _hierarchy(tmp_path, "r1"), _hierarchy(tmp_path, "r2")
    dev = tmp_path / "dev"
    assert (
        _cli(
            "device",
            "init",
            dev,
            "--trusted-key",
            r1 / "cert.pem",
            "--hardware-id",
            "acme-ecu-v2",
            "--slot-size",
            "32768",
            "--region",
            "eu",
        )
        == 0
    )
    assert _cli("device", "install", dev, _image(tmp_path, "r1", 1)) == 0
    _boot_confirm(dev)
    # Not anchored yet: an image under the new root alone is refused.
    assert _cli("device", "install", dev, _image(tmp_path, "r2", 2)) == 1
    message = tmp_path / "r1-to-r2.rot"
    assert (
        _cli(
            "pki", "rotation-message", "--ca", r1, "--new-root", r2, "--epoch", 2, "--out", message
        )
        == 0
    )
    # The running firmware is signed under r1 only: rotating now would brick at next boot.
    capsys.readouterr()
    assert _cli("device", "rotate-anchor", dev, message) == 1
    assert "does not verify under the new root" in capsys.readouterr().err
    # Ship firmware whose chain reaches r2, and r1 through r1's cross-certificate of r2.
    cross = tmp_path / "cross.pem"
    assert _cli("pki", "cross-sign", "--ca", r1, "--new-root", r2, "--out", cross) == 0
    assert _cli("device", "install", dev, _image(tmp_path, "r2", 3, extra_chain=cross)) == 0
    _boot_confirm(dev)
    # A rotation signed by the new root itself is refused.
    self_signed = tmp_path / "self.rot"
    assert (
        _cli(
            "pki",
            "rotation-message",
            "--ca",
            r2,
            "--new-root",
            r2,
            "--epoch",
            2,
            "--out",
            self_signed,
        )
        == 0
    )
    capsys.readouterr()
    assert _cli("device", "rotate-anchor", dev, self_signed) == 1
    assert "anchor-rotation" in capsys.readouterr().err
    assert _cli("device", "rotate-anchor", dev, message) == 0
    assert _cli("device", "rotate-anchor", dev, message) == 1  # replay
    otp = json.loads((dev / "otp.json").read_text())
    assert otp["key_epoch"] == 2 and otp["epochs"] == [1, 2]
    assert _cli("device", "boot", dev) == 0  # still boots: its chain reaches the new root
    # The old root is retired for good.
    assert _cli("device", "install", dev, _image(tmp_path, "r1", 4)) == 1
    assert _cli("device", "install", dev, _image(tmp_path, "r2", 5)) == 0
    back = tmp_path / "back.rot"
    assert (
        _cli("pki", "rotation-message", "--ca", r1, "--new-root", r1, "--epoch", 3, "--out", back)
        == 0
    )
    assert _cli("device", "rotate-anchor", dev, back) == 1
    garbage = tmp_path / "garbage.rot"
    garbage.write_bytes(b"OTAGANCH" + os.urandom(40))
    assert _cli("device", "rotate-anchor", dev, garbage) == 1
