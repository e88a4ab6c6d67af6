"""``-`` is stdin as an input and stdout as an output; ``--json`` on ``key public`` and ``extract``.

Found by hand (issue 13): ``-`` was a file named "-". Real subprocesses with real pipes:
stdin as a pipe (not seekable) is the case that needs care, since the readers seek.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult, assert_one_line, cached_key, make_image
from otaguard.crypto.keys import KeyType, key_id, private_key_pem, public_key_pem

Cli = Callable[..., CliResult]
OTAGUARD = [sys.executable, "-c", "from otaguard.cli.entry import main; main()"]
SIGN = ["--version", "1.0.0", "--security-counter", "1", "--hardware-id", "hw"]
PAYLOAD = bytes(range(256)) * 300


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    key = cached_key(KeyType.ECDSA_P256, 70)
    files = {name: tmp_path / name for name in ("key.pem", "key.pub", "fw.img", "fw.bin")}
    files["key.pem"].write_bytes(private_key_pem(key, None))
    files["key.pub"].write_bytes(public_key_pem(key.public_key()))
    files["fw.img"].write_bytes(make_image(PAYLOAD, [key]))
    files["fw.bin"].write_bytes(PAYLOAD)
    return files


def _run(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*OTAGUARD, *map(str, args)], input=stdin, capture_output=True, check=False
    )


def test_sign_from_stdin_to_stdout_then_verify_and_inspect_from_stdin(
    world: dict[str, Path],
) -> None:
    signed = _run("sign", "--key", world["key.pem"], *SIGN, "-", "-", stdin=PAYLOAD)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(b"OTAGUARD")
    assert b"signed -:" in signed.stderr  # the message goes to stderr: stdout is the image
    verified = _run("verify", "--trusted-key", world["key.pub"], "-", stdin=signed.stdout)
    assert verified.returncode == 0, verified.stderr
    assert b"verified: version 1.0.0" in verified.stdout
    inspected = _run("inspect", "--json", "-", stdin=signed.stdout)
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["payload_length"] == len(
        PAYLOAD
    )


def test_sign_mcuboot_from_stdin(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fw.mcuboot"
    args = ["sign", "--format", "mcuboot", "--key", world["key.pem"], "--version", "1.2.3",
            "--security-counter", "1", "--pad-header", "-", out]  # fmt: skip
    signed = _run(*args, stdin=PAYLOAD)
    assert signed.returncode == 0, signed.stderr
    verified = _run("verify", "--trusted-key", world["key.pub"], out)
    assert verified.returncode == 0, verified.stderr


def test_stdin_redirected_from_a_file_is_read_in_place(world: dict[str, Path]) -> None:
    with open(world["fw.img"], "rb") as image:
        verified = subprocess.run(
            [*OTAGUARD, "verify", "--trusted-key", str(world["key.pub"]), "-"],
            stdin=image,
            capture_output=True,
            check=False,
        )
    assert verified.returncode == 0, verified.stderr


def test_extract_to_stdout_only_after_verification(world: dict[str, Path], tmp_path: Path) -> None:
    extracted = _run("extract", "--trusted-key", world["key.pub"], world["fw.img"], "-")
    assert extracted.returncode == 0, extracted.stderr
    assert extracted.stdout == PAYLOAD
    assert extracted.stderr.startswith(b"verified; payload of version 1.4.0 written to -")
    tampered = bytearray(world["fw.img"].read_bytes())
    tampered[tampered.rindex(PAYLOAD[-64:])] ^= 1  # the payload's end: found once all streamed
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(tampered))
    refused = _run("extract", "--trusted-key", world["key.pub"], bad, "-")
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == b""  # not one byte of an unverified payload
    assert_one_line(refused.stderr.decode())
    piped = _run("extract", "--trusted-key", world["key.pub"], "-", "-", stdin=bytes(tampered))
    assert piped.returncode == 1 and piped.stdout == b""


def test_a_failed_sign_writes_nothing_to_stdout(world: dict[str, Path]) -> None:
    refused = _run("sign", "--key", world["key.pub"], *SIGN, world["fw.bin"], "-")
    assert refused.returncode == 2 and refused.stdout == b""


def test_binary_output_to_a_terminal_is_refused(world: dict[str, Path]) -> None:
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [*OTAGUARD, "sign", "--key", str(world["key.pem"]), *SIGN, str(world["fw.bin"]), "-"],
            stdout=follower,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert b"refusing to write binary output to a terminal" in result.stderr


def test_key_public_to_stdout_and_as_json(cli: Cli, world: dict[str, Path], tmp_path: Path) -> None:
    pem = world["key.pub"].read_bytes()
    shown = _run("key", "public", world["key.pem"], "--out", "-")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == pem  # only the key: ready to pipe
    expected_id = key_id(cached_key(KeyType.ECDSA_P256, 70).public_key())
    assert shown.stderr.decode() == f"key id: {expected_id} (ecdsa-p256)\n"

    as_json = cli("key", "public", world["key.pem"], "--json", "--out", tmp_path / "k.pub")
    assert as_json.code == 0, as_json.err
    assert as_json.json == {
        "key_id": expected_id,
        "algorithm": "ecdsa-p256",
        "public_key": pem.decode(),
        "out": str(tmp_path / "k.pub"),
    }
    assert (tmp_path / "k.pub").read_bytes() == pem
    both = cli("key", "public", world["key.pem"], "--json", "--out", "-")
    assert both.code == 2 and "both want stdout" in both.err


def test_extract_json(cli: Cli, world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "payload.bin"
    result = cli("extract", "--json", "--trusted-key", world["key.pub"], world["fw.img"], out)
    assert result.code == 0, result.err
    report = result.json
    assert report["verified"] is True and report["out"] == str(out)
    assert report["version"] == "1.4.0" and report["payload_length"] == len(PAYLOAD)
    assert out.read_bytes() == PAYLOAD
    both = cli("extract", "--json", "--trusted-key", world["key.pub"], world["fw.img"], "-")
    assert both.code == 2 and "both want stdout" in both.err


def test_a_file_named_dash_is_still_reachable_as_dot_slash_dash(
    world: dict[str, Path], tmp_path: Path
) -> None:
    result = subprocess.run(
        [*OTAGUARD, "sign", "--key", str(world["key.pem"]), *SIGN, str(world["fw.bin"]), "./-"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "-").read_bytes().startswith(b"OTAGUARD")


def _new_image(world: dict[str, Path]) -> Path:
    new = world["fw.img"].parent / "fw2.img"
    new.write_bytes(
        make_image(
            PAYLOAD[:-300] + b"v2" * 150, [cached_key(KeyType.ECDSA_P256, 70)], version="1.5.0"
        )
    )
    return new


def test_delta_create_to_stdout_then_apply_from_stdin_to_stdout(world: dict[str, Path]) -> None:
    new = _new_image(world)
    made = _run("delta", "create", "--key", world["key.pem"], world["fw.img"], new, "-")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(b"OTAGUARD") and b"wrote -:" in made.stderr
    rebuilt = _run(
        "delta", "apply", "--trusted-key", world["key.pub"], world["fw.img"], "-", "-",
        stdin=made.stdout,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout == new.read_bytes()  # the very image, byte for byte, on stdout
    assert b"rebuilt -:" in rebuilt.stderr


def test_delta_apply_to_stdout_writes_nothing_when_the_base_is_wrong(
    world: dict[str, Path],
) -> None:
    new = _new_image(world)
    made = _run("delta", "create", "--key", world["key.pem"], world["fw.img"], new, "-")
    refused = _run("delta", "apply", new, "-", "-", stdin=made.stdout)  # not its base
    assert refused.returncode == 1 and refused.stdout == b""


def test_delta_json_and_stdout_output_are_refused_together(world: dict[str, Path]) -> None:
    new = _new_image(world)
    both = _run("delta", "create", "--json", "--key", world["key.pem"], world["fw.img"], new, "-")
    assert both.returncode == 2 and b"both want stdout" in both.stderr and both.stdout == b""


def test_pki_outputs_to_stdout(cli: Cli, tmp_path: Path) -> None:
    root, new_root = tmp_path / "root", tmp_path / "root2"
    assert cli("pki", "init-root", "--out-dir", root, "--subject", "CN=Old").code == 0
    assert cli("pki", "init-root", "--out-dir", new_root, "--subject", "CN=New").code == 0
    crl = _run("pki", "crl", "--ca", root, "--out", "-")
    assert crl.returncode == 0, crl.stderr
    assert crl.stdout.startswith(b"-----BEGIN X509 CRL-----")
    assert b"written to -" in crl.stderr  # the message is not mixed into the CRL
    cross = _run("pki", "cross-sign", "--ca", root, "--new-root", new_root, "--out", "-")
    assert cross.returncode == 0 and cross.stdout.startswith(b"-----BEGIN CERTIFICATE-----")
    rotation = _run(
        "pki", "rotation-message", "--ca", root, "--new-root", new_root, "--epoch", "2",
        "--out", "-",
    )  # fmt: skip
    assert rotation.returncode == 0 and rotation.stdout and b"written to -" in rotation.stderr
    both = _run("pki", "crl", "--json", "--ca", root, "--out", "-")
    assert both.returncode == 2 and b"both want stdout" in both.stderr and both.stdout == b""


def test_pki_outputs_piped_into_a_device(cli: Cli, tmp_path: Path) -> None:
    r1, r2, dev = tmp_path / "r1", tmp_path / "r2", tmp_path / "dev"
    assert cli("pki", "init-root", "--out-dir", r1, "--subject", "CN=R1").code == 0
    assert cli("pki", "init-root", "--out-dir", r2, "--subject", "CN=R2").code == 0
    made = cli("device", "init", dev, "--trusted-key", r1 / "cert.pem", "--hardware-id", "hw")
    assert made.code == 0, made.err
    crl = _run("pki", "crl", "--ca", r1, "--out", "-")
    learned = _run("device", "learn-crl", dev, "-", stdin=crl.stdout)
    assert learned.returncode == 0, learned.stderr
    assert b"now holds 1 revocation list" in learned.stdout
    rotation = _run(
        "pki", "rotation-message", "--ca", r1, "--new-root", r2, "--epoch", "2", "--out", "-"
    )
    rotated = _run("device", "rotate-anchor", dev, "-", stdin=rotation.stdout)
    assert rotated.returncode == 0, rotated.stderr
    assert b"key epoch now 2" in rotated.stdout
    replayed = _run("device", "rotate-anchor", dev, "-", stdin=rotation.stdout)
    assert replayed.returncode == 1  # the same message twice: refused
