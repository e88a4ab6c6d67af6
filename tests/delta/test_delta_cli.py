"""``otaguard delta create|apply`` and ``device install DIR DELTA``: exit codes, atomic outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers_delta import Pair
from otaguard.cli import main as cli_main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    def invoke(*args: object) -> tuple[int, str, str]:
        code = cli_main.run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def files(tmp_path: Path, pair: Pair) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization

    paths = {name: tmp_path / name for name in ("old.img", "new.img", "key.pem", "key.pub")}
    paths["old.img"].write_bytes(pair.old)
    paths["new.img"].write_bytes(pair.new)
    paths["key.pem"].write_bytes(
        pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key.pub"].write_bytes(
        pair.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


def test_create_apply_round_trip(run, files: dict[str, Path], tmp_path: Path) -> None:
    delta, out = tmp_path / "d.delta", tmp_path / "out.img"
    code, text, _ = run(
        "delta",
        "create",
        "--key",
        files["key.pem"],
        files["old.img"],
        files["new.img"],
        delta,
        "--json",
    )
    assert code == 0
    report = json.loads(text)
    assert report["delta_bytes"] == delta.stat().st_size and not report["full_fallback"]
    code, text, _ = run(
        "delta", "apply", "--trusted-key", files["key.pub"], files["old.img"], delta, out
    )
    assert code == 0 and "verified" in text
    assert out.read_bytes() == files["new.img"].read_bytes()
    code, text, _ = run("verify", "--trusted-key", files["key.pub"], out)
    assert code == 0


def test_wrong_base_exit_1_and_nothing_written(run, files: dict[str, Path], tmp_path: Path) -> None:
    delta, out = tmp_path / "d.delta", tmp_path / "out.img"
    assert (
        run(
            "delta", "create", "--key", files["key.pem"], files["old.img"], files["new.img"], delta
        )[0]
        == 0
    )
    code, _, err = run("delta", "apply", files["new.img"], delta, out)
    assert code == 1 and "rejected (digest)" in err and "base" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["old.img", "new.img", "key.pem", "key.pub", "d.delta"]
    )


def test_corrupt_delta_exit_1_no_partial_output(
    run, files: dict[str, Path], tmp_path: Path
) -> None:
    delta, out = tmp_path / "d.delta", tmp_path / "out.img"
    run("delta", "create", "--key", files["key.pem"], files["old.img"], files["new.img"], delta)
    raw = bytearray(delta.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    delta.write_bytes(bytes(raw))
    code, _, err = run("delta", "apply", files["old.img"], delta, out)
    assert code == 1 and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out.img.*"))
    code, _, _ = run(
        "delta", "apply", "--trusted-key", files["key.pub"], files["old.img"], delta, out
    )
    assert code == 1 and not out.exists()


def test_usage_errors_exit_2(run, files: dict[str, Path], tmp_path: Path) -> None:
    assert (
        run(
            "delta",
            "create",
            "--key",
            files["key.pem"],
            files["old.img"],
            files["old.img"],
            tmp_path / "x",
        )[0]
        == 2
    )
    assert run("delta", "apply", tmp_path / "missing", files["old.img"], tmp_path / "y")[0] == 2
    assert run("delta", "create", files["old.img"])[0] == 2


def test_far_apart_versions_fall_back(
    run, files: dict[str, Path], tmp_path: Path, pair: Pair
) -> None:
    from helpers import make_image

    far = tmp_path / "far.img"
    far.write_bytes(
        make_image(
            bytes(range(256)) * 64 + b"tail", [pair.key], version="3.0.0", security_counter=9
        )
    )
    delta = tmp_path / "far.delta"
    code, text, _ = run("delta", "create", "--key", files["key.pem"], files["old.img"], far, delta)
    assert code == 0 and "compressed full image instead" in text
    out = tmp_path / "far.out"
    assert run("delta", "apply", files["old.img"], delta, out)[0] == 0
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(far.read_bytes()).digest()


def test_device_install_delta(run, files: dict[str, Path], tmp_path: Path) -> None:
    ecu, delta = tmp_path / "ecu", tmp_path / "d.delta"
    run("delta", "create", "--key", files["key.pem"], files["old.img"], files["new.img"], delta)
    assert (
        run(
            "device", "init", ecu, "--trusted-key", files["key.pub"], "--hardware-id", "acme-ecu-v2"
        )[0]
        == 0
    )
    code, _, err = run("device", "install", ecu, delta)
    assert code == 1 and "base" in err  # nothing installed yet: no base
    assert run("device", "install", ecu, files["old.img"])[0] == 0
    assert run("device", "boot", ecu)[0] == 0
    assert run("device", "confirm", ecu)[0] == 0
    code, text, _ = run("device", "install", ecu, delta, "--json")
    assert code == 0 and json.loads(text)["version"] == "1.5.0"
    code, text, _ = run("device", "boot", ecu)
    assert code == 0 and "1.5.0" in text
    code, _, err = run("device", "install", ecu, files["old.img"], f"main={delta}")
    assert code == 2


def test_apply_json(run, files: dict[str, Path], tmp_path: Path) -> None:
    delta, out = tmp_path / "d.delta", tmp_path / "out.img"
    create = ("delta", "create", "--key", files["key.pem"], files["old.img"], files["new.img"])
    assert run(*create, delta)[0] == 0
    code, text, _ = run("delta", "apply", "--json", files["old.img"], delta, out)
    assert code == 0
    report = json.loads(text)
    assert report["out"] == str(out) and report["bytes"] == out.stat().st_size
    assert report["version"] == "1.5.0" and report["security_counter"] == 8
    assert report["base_sha256"] == hashlib.sha256(files["old.img"].read_bytes()).hexdigest()
    assert report["signatures_verified"] is False and report["chunks"] >= 1
    trusted = ("--trusted-key", files["key.pub"])
    code, text, _ = run("delta", "apply", *trusted, "--json", files["old.img"], delta, out)
    assert code == 0 and json.loads(text)["signatures_verified"] is True
    code, text, err = run("delta", "apply", "--json", files["new.img"], delta, tmp_path / "x")
    assert code == 1 and text == "" and "rejected (digest)" in err
