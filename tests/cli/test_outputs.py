"""Where commands write: the one output-path policy, through every command that writes a file.

Found by hand (issue 13): outputs that are devices or FIFOs were replaced by regular files
(as root, ``otaguard sign IN /dev/null`` destroyed ``/dev/null``), keys and images were
overwritten silently (``key public K --out K``, ``extract IMG IMG``), and ``-`` was a file
named "-". The rules live in ``otaguard._atomic`` and ``otaguard.cli.common``; each case
here is a command line a user could type. Devices are made with ``os.mknod`` in tmp
directories (a clone of /dev/null, never the real one); the tests run as root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult, assert_one_line, cached_key, make_image
from otaguard.crypto.keys import KeyType, private_key_pem, public_key_pem

Cli = Callable[..., CliResult]
SIGN = "--version 1.0.0 --security-counter 1 --hardware-id hw"


@pytest.fixture
def world(tmp_path: Path, cli: Cli) -> dict[str, Path]:
    """A key, a payload, two signed releases, a delta between them and a CA, in tmp_path."""
    key = cached_key(KeyType.ED25519, 50)
    files = {name: tmp_path / name for name in ("key.pem", "key.pub", "fw.bin", "old.img")}
    files["key.pem"].write_bytes(private_key_pem(key, None))
    files["key.pub"].write_bytes(public_key_pem(key.public_key()))
    payload = bytes(range(256)) * 400
    files["fw.bin"].write_bytes(payload)
    files["old.img"].write_bytes(make_image(payload, [key], version="1.0.0", security_counter=1))
    new = payload[:5000] + b"patched" + payload[5000:]
    files["new.img"] = tmp_path / "new.img"
    files["new.img"].write_bytes(make_image(new, [key], version="1.1.0", security_counter=2))
    files["delta"] = tmp_path / "old-new.delta"
    made = cli("delta", "create", "--key", files["key.pem"], *_old_new(files), files["delta"])
    assert made.code == 0, made.err
    files["ca"] = tmp_path / "ca"
    root = cli("pki", "init-root", "--out-dir", files["ca"], "--subject", "CN=Output Test Root")
    assert root.code == 0, root.err
    files["dir"] = tmp_path
    return files


def _old_new(files: dict[str, Path]) -> tuple[Path, Path]:
    return files["old.img"], files["new.img"]


def _args(template: str, world: dict[str, Path], **more: object) -> list[str]:
    names = {k.replace(".", "_"): str(v) for k, v in world.items()}
    return template.format(**names, **{k: str(v) for k, v in more.items()}).split()


#: Every command that writes a file the user names; {out} is that file.
WRITERS = {
    "sign": f"sign --key {{key_pem}} {SIGN} {{fw_bin}} {{out}}",
    "sign mcuboot": "sign --format mcuboot --key {key_pem} --version 1.2.3 --security-counter 1 "
    "--pad-header {fw_bin} {out}",
    "extract": "extract --trusted-key {key_pub} {old_img} {out}",
    "key public --out": "key public {key_pem} --out {out}",
    "key generate --out": "key generate --algorithm ed25519 --out {out}",
    "key generate --out --force": "key generate --algorithm ed25519 --out {out} --force",
    "key generate --public-out": "key generate --algorithm ed25519 --out {dir}/new.pem "
    "--public-out {out}",
    "delta create": "delta create --key {key_pem} {old_img} {new_img} {out}",
    "delta apply": "delta apply --trusted-key {key_pub} {old_img} {delta} {out}",
    "pki crl --out": "pki crl --ca {ca} --out {out}",
}


def test_every_writer_succeeds_on_a_plain_path(cli: Cli, world: dict[str, Path]) -> None:
    """The baseline for the refusals below: each command line works on a new regular file."""
    for name, template in WRITERS.items():
        out = world["dir"] / f"plain-{name.replace(' ', '_')}"
        result = cli(*_args(template, world, out=out))
        assert result.code == 0, (name, result.err)
        assert stat.S_ISREG(out.stat().st_mode), name
    assert not _temp_files(world["dir"])


# --- outputs that are not regular files ---------------------------------------------------


def _null_clone(path: Path) -> str:
    """A character device like /dev/null (1, 3), in a tmp directory."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return "a character device"


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return "a FIFO"


@pytest.mark.parametrize("make", [_null_clone, _fifo], ids=["chardev", "fifo"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_device_or_fifo_output_is_refused_and_left_alone(
    cli: Cli, world: dict[str, Path], writer: str, make: Callable[[Path], str]
) -> None:
    out = world["dir"] / "special"
    kind = make(out)
    before = os.lstat(out)
    result = cli(*_args(WRITERS[writer], world, out=out))
    assert result.code == 2, (writer, result.err)
    assert_one_line(result.err)
    assert f"is {kind}: otaguard writes only regular files" in result.err
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    assert not (world["dir"] / "new.pem").exists()  # refused before a key was made
    assert not _temp_files(world["dir"])


def test_a_symlink_output_replaces_the_file_it_points_to(cli: Cli, world: dict[str, Path]) -> None:
    """Like cp and the shell's '>': the link stays a link, its target gets the new bytes."""
    target = world["dir"] / "v1.img"
    target.write_bytes(b"previous release")
    link = world["dir"] / "current.img"
    link.symlink_to(target.name)
    result = cli(*_args(WRITERS["sign"], world, out=link))
    assert result.code == 0, result.err
    assert link.is_symlink() and os.readlink(link) == "v1.img"
    assert target.read_bytes().startswith(b"OTAGUARD")
    verified = cli("verify", "--trusted-key", world["key.pub"], link)
    assert verified.code == 0, verified.err

    dangling = world["dir"] / "next.img"
    dangling.symlink_to("v2.img")
    assert cli(*_args(WRITERS["sign"], world, out=dangling)).code == 0
    assert dangling.is_symlink() and (world["dir"] / "v2.img").read_bytes()[:8] == b"OTAGUARD"


def test_a_symlink_to_a_device_is_refused_like_the_device(cli: Cli, world: dict[str, Path]) -> None:
    device = world["dir"] / "null"
    _null_clone(device)
    link = world["dir"] / "out.img"
    link.symlink_to(device)
    result = cli(*_args(WRITERS["sign"], world, out=link))
    assert result.code == 2 and "is a character device" in result.err, result.err
    assert link.is_symlink() and stat.S_ISCHR(device.lstat().st_mode)


# --- an output that is one of the inputs ---------------------------------------------------

#: command line -> the input it would have replaced ({victim}); {out} names it another way
SAME_FILE = {
    "extract IMG IMG": ("extract --trusted-key {key_pub} {old_img} {out}", "old.img"),
    "key public K --out K": ("key public {key_pem} --out {out}", "key.pem"),
    "key public K --out K --force": ("key public {key_pem} --out {out} --force", "key.pem"),
    "sign IN IN": (f"sign --key {{key_pem}} {SIGN} {{fw_bin}} {{out}}", "fw.bin"),
    "sign --key K IN K": (f"sign --key {{key_pem}} {SIGN} {{fw_bin}} {{out}}", "key.pem"),
    "sign --cert-chain C IN C": (
        f"sign --key {{ca}}/key.pem {SIGN} --cert-chain {{ca}}/cert.pem {{fw_bin}} {{out}}",
        "ca/cert.pem",
    ),
    "sign mcuboot --key K IN K": (
        "sign --format mcuboot --key {key_pem} --version 1.0.0 --security-counter 1 "
        "--pad-header {fw_bin} {out}",
        "key.pem",
    ),
    "delta create OLD NEW NEW": (
        "delta create --key {key_pem} {old_img} {new_img} {out}",
        "new.img",
    ),
    "delta create --key K OLD NEW K": (
        "delta create --key {key_pem} {old_img} {new_img} {out}",
        "key.pem",
    ),
    "delta apply OLD DELTA OLD": (
        "delta apply --trusted-key {key_pub} {old_img} {delta} {out}",
        "old.img",
    ),
    "delta apply --trusted-key K OLD DELTA K": (
        "delta apply --trusted-key {key_pub} {old_img} {delta} {out}",
        "key.pub",
    ),
    "pki crl --out CA/cert.pem": ("pki crl --ca {ca} --out {out}", "ca/cert.pem"),
    "pki crl --out CA/key.pem": ("pki crl --ca {ca} --out {out}", "ca/key.pem"),
    "pki crl --out CA/state.json": ("pki crl --ca {ca} --out {out}", "ca/state.json"),
}


#: the new refusal, and the path comparisons some commands made already
REFUSALS = ("refusing to replace an input", "given twice", "must be different files")


def _hard_link(victim: Path) -> Path:
    alias = victim.with_name("hard-" + victim.name)
    os.link(victim, alias)
    return alias


def _symlink(victim: Path) -> Path:
    alias = victim.with_name("soft-" + victim.name)
    alias.symlink_to(victim)
    return alias


@pytest.mark.parametrize("alias", [None, _hard_link, _symlink], ids=["same", "hardlink", "symlink"])
@pytest.mark.parametrize("case", list(SAME_FILE))
def test_an_output_that_is_an_input_is_refused(
    cli: Cli, world: dict[str, Path], case: str, alias: Callable[[Path], Path] | None
) -> None:
    template, name = SAME_FILE[case]
    victim = world["dir"] / name
    before = victim.read_bytes()
    out = victim if alias is None else alias(victim)
    result = cli(*_args(template, world, out=out))
    assert result.code == 2, (case, result.err)
    assert_one_line(result.err)
    assert any(m in result.err for m in REFUSALS), result.err
    assert victim.read_bytes() == before
    assert not _temp_files(world["dir"])


# --- keys are never replaced silently ------------------------------------------------------


def test_key_generate_refuses_an_existing_key_without_force(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "release.pem"
    assert cli("key", "generate", "--algorithm", "ed25519", "--out", key).code == 0
    first = key.read_bytes()
    again = cli("key", "generate", "--algorithm", "ecdsa-p256", "--out", key)
    assert again.code == 2 and "exists: give --force" in again.err
    assert_one_line(again.err)
    assert key.read_bytes() == first
    forced = cli("key", "generate", "--algorithm", "ecdsa-p256", "--out", key, "--force")
    assert forced.code == 0, forced.err
    assert key.read_bytes() != first and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_key_generate_refuses_an_existing_public_out_before_making_the_key(
    cli: Cli, tmp_path: Path
) -> None:
    pub = tmp_path / "release.pub"
    pub.write_bytes(b"an older public key")
    result = cli("key", "generate", "--algorithm", "ed25519", "--out", tmp_path / "k.pem",
                 "--public-out", pub)  # fmt: skip
    assert result.code == 2 and "exists" in result.err
    assert pub.read_bytes() == b"an older public key" and not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize("how", ["same", "symlink"])
def test_key_generate_refuses_out_and_public_out_being_one_file(
    cli: Cli, tmp_path: Path, how: str
) -> None:
    """The public key would replace the private key written a moment before: lost for good."""
    out = tmp_path / "k.pem"
    public_out = out
    if how == "symlink":
        public_out = tmp_path / "k.pub"
        public_out.symlink_to(out.name)  # dangling until the key is written
    for force in ([], ["--force"]):
        result = cli("key", "generate", "--algorithm", "ed25519", "--out", out,
                     "--public-out", public_out, *force)  # fmt: skip
        assert result.code == 2 and "the private key would be lost" in result.err, result.err
        assert not out.exists()


def test_key_public_refuses_an_existing_out_without_force(cli: Cli, world: dict[str, Path]) -> None:
    out = world["dir"] / "old.pub"
    out.write_bytes(b"kept")
    refused = cli("key", "public", world["key.pem"], "--out", out)
    assert refused.code == 2 and "exists: give --force" in refused.err
    assert out.read_bytes() == b"kept"
    forced = cli("key", "public", world["key.pem"], "--out", out, "--force")
    assert forced.code == 0 and out.read_bytes() == world["key.pub"].read_bytes()


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
