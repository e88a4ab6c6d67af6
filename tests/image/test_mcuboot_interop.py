"""MCUboot interop with imgtool (PyPI), both directions, for every algorithm.

imgtool is MCUboot's own signer: if it accepts what we sign and we accept what
it signs, MCUboot bootloaders built from the same sources agree with us.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import cached_key
from helpers_mcuboot import rsa2048, run_imgtool, write_key
from otaguard.cli.main import run
from otaguard.crypto.keys import KeyType, PrivateKey

ALGORITHMS = {
    "ed25519": lambda: cached_key(KeyType.ED25519),
    "ecdsa-p256": lambda: cached_key(KeyType.ECDSA_P256),
    "ecdsa-p384": lambda: cached_key(KeyType.ECDSA_P384),
    "rsa-2048": rsa2048,
    "rsa-3072": lambda: cached_key(KeyType.RSA_3072),
}
COMMON = ["--header-size", "0x200", "--pad-header"]


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(os.urandom(40_000))
    return path


def _key(name: str, tmp_path: Path) -> tuple[PrivateKey, Path, Path]:
    key = ALGORITHMS[name]()
    pem = write_key(key, tmp_path / f"{name}.pem")
    pub = tmp_path / f"{name}.pub"
    assert run(["key", "public", str(pem), "--out", str(pub)]) == 0
    return key, pem, pub


def _imgtool_sign(pem: Path, src: Path, out: Path, *extra: str) -> None:
    result = run_imgtool(
        "sign",
        "-k",
        pem,
        "-v",
        "1.2.3+4",
        "--security-counter",
        "7",
        "-S",
        "0x40000",
        *COMMON,
        *extra,
        src,
        out,
    )
    assert result.returncode == 0, result.stderr


def _ours(*args: str | Path) -> int:
    return run([str(a) for a in args])


def _sign(pem: Path, version: str = "1.2.3+4", counter: str = "7") -> list[str | Path]:
    """otaguard's MCUboot signing arguments, as _imgtool_sign's for imgtool."""
    return ["sign", "--format", "mcuboot", "--key", pem, "--version", version,
            "--security-counter", counter]  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_imgtool_signs_otaguard_verifies(name: str, tmp_path: Path, fw: Path) -> None:
    _, pem, pub = _key(name, tmp_path)
    img = tmp_path / "imgtool.bin"
    _imgtool_sign(pem, fw, img)
    assert _ours("verify", "--trusted-key", pub, "--min-security-counter", "7", img) == 0
    assert _ours("verify", "--format", "mcuboot", "--trusted-key", pub, img) == 0
    tampered = tmp_path / "tampered.bin"
    data = bytearray(img.read_bytes())
    data[0x200 + 1000] ^= 0x10
    tampered.write_bytes(bytes(data))
    assert _ours("verify", "--trusted-key", pub, tampered) == 1
    _, _, other_pub = _key("ed25519" if name != "ed25519" else "ecdsa-p256", tmp_path)
    assert _ours("verify", "--trusted-key", other_pub, img) == 1


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_otaguard_signs_imgtool_verifies(name: str, tmp_path: Path, fw: Path) -> None:
    _, pem, _ = _key(name, tmp_path)
    img = tmp_path / "ours.bin"
    assert (
        _ours(
            *_sign(pem),
            *COMMON,
            fw,
            img,
        )
        == 0
    )
    result = run_imgtool("verify", "-k", pem, img)
    assert result.returncode == 0 and "correctly validated" in result.stdout, result.stdout
    data = bytearray(img.read_bytes())
    data[0x200 + 5] ^= 1
    img.write_bytes(bytes(data))
    assert run_imgtool("verify", "-k", pem, img).returncode != 0


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--pure"],
        ["--align", "8", "--pad", "--confirm"],
        ["--align", "4", "--pad", "--dependency", "1,2.0.0+0"],
        ["--endian", "big"],
        ["--load-addr", "0x20000000"],
    ],
    ids=["plain", "pure", "padded-confirmed", "dependency", "big-endian", "ram-load"],
)
def test_ed25519_output_is_byte_identical_to_imgtool(
    extra: list[str], tmp_path: Path, fw: Path
) -> None:
    """Ed25519 is deterministic, so the same inputs must give imgtool's exact bytes."""
    _, pem, _ = _key("ed25519", tmp_path)
    ours, theirs = tmp_path / "ours.bin", tmp_path / "theirs.bin"
    ours_args = ["--slot-size", "0x40000", *extra]
    assert (
        _ours(
            *_sign(pem),
            *COMMON,
            *ours_args,
            fw,
            ours,
        )
        == 0
    )
    imgtool_extra = [
        {"--dependency": "-d", "--endian": "-e", "--load-addr": "--load-addr"}.get(a, a)
        for a in extra
    ]
    if "-d" in imgtool_extra:
        i = imgtool_extra.index("-d") + 1
        image_id, version = imgtool_extra[i].split(",")
        imgtool_extra[i] = f"({image_id},{version})"
    _imgtool_sign(pem, fw, theirs, *imgtool_extra)
    assert ours.read_bytes() == theirs.read_bytes()


def test_hash_only_image_from_imgtool_is_refused(tmp_path: Path, fw: Path) -> None:
    _, _, pub = _key("ed25519", tmp_path)
    img = tmp_path / "hash-only.bin"
    result = run_imgtool("sign", "-v", "1.0.0", "-S", "0x40000", *COMMON, fw, img)
    assert result.returncode == 0, result.stderr
    assert _ours("verify", "--trusted-key", pub, img) == 1


def test_imgtool_custom_and_boot_record_tlvs(tmp_path: Path, fw: Path) -> None:
    """Protected TLVs we do not interpret are still covered by the hash and accepted."""
    _, pem, pub = _key("ecdsa-p256", tmp_path)
    img = tmp_path / "custom.bin"
    _imgtool_sign(pem, fw, img, "--custom-tlv", "0xa0", "0x0102", "--boot-record", "SPE")
    assert _ours("verify", "--trusted-key", pub, img) == 0


def test_imgtool_padded_signature_and_full_pubkey(tmp_path: Path, fw: Path) -> None:
    _, pem, pub = _key("ecdsa-p256", tmp_path)
    for extra in (["--pad-sig"], ["--public-key-format", "full"]):
        img = tmp_path / f"img{len(extra[0])}.bin"
        _imgtool_sign(pem, fw, img, *extra)
        assert _ours("verify", "--trusted-key", pub, img) == 0


def test_hardware_id_tlv_is_accepted_by_imgtool(tmp_path: Path, fw: Path) -> None:
    """Our vendor TLVs sit in the protected area: imgtool (and MCUboot) hash and accept them."""
    _, pem, pub = _key("ecdsa-p256", tmp_path)
    img = tmp_path / "hw.bin"
    assert (
        _ours(
            *_sign(pem, "2.0.0", "auto"),
            "--hardware-id",
            "acme-ecu-v2",
            *COMMON,
            fw,
            img,
        )
        == 0
    )
    assert run_imgtool("verify", "-k", pem, img).returncode == 0
    assert (
        _ours(
            "verify",
            "--trusted-key",
            pub,
            "--hardware-id",
            "acme-ecu-v2",
            "--min-security-counter",
            str(2 << 24),
            img,
        )
        == 0
    )
    assert _ours("verify", "--trusted-key", pub, "--hardware-id", "acme-ecu-v3", img) == 1
