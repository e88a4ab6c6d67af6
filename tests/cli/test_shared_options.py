"""Options several commands read alike (``cli/options.py``): one refusal, one message each."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from helpers import CliResult, assert_one_line
from helpers_pki import make_pki

Cli = Callable[..., CliResult]


@pytest.fixture
def files(tmp_path: Path, cli: Cli) -> dict[str, Path]:
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert (
        cli("key", "generate", "--algorithm", "ed25519", "--out", key, "--public-out", pub).code
        == 0
    )
    fw = tmp_path / "fw.bin"
    fw.write_bytes(os.urandom(5000))
    return {"key": key, "pub": pub, "fw": fw, "dir": tmp_path}


def _sign(cli: Cli, files: dict[str, Path], out: str, *extra: object) -> CliResult:
    release = ("--version", "1.0.0", "--security-counter", "1", "--hardware-id", "hw")
    return cli("sign", "--key", files["key"], *release, *extra, files["fw"], files["dir"] / out)


def test_the_same_key_under_two_names_is_refused_everywhere(
    cli: Cli, files: dict[str, Path]
) -> None:
    assert _sign(cli, files, "fw.img").code == 0
    image = files["dir"] / "fw.img"
    copy = files["dir"] / "copy.pub"
    shutil.copy(files["pub"], copy)
    for args in (
        ("verify", "--trusted-key", files["pub"], "--trusted-key", copy, image),
        ("extract", "--trusted-key", files["pub"], "--trusted-key", copy, image, "out.bin"),
        (
            "delta",
            "apply",
            "--trusted-key",
            files["pub"],
            "--trusted-key",
            copy,
            files["fw"],
            image,
            "o",
        ),
    ):
        result = cli(*args)
        assert result.code == 2, args
        assert "the same key was given twice as --trusted-key" in result.err
        assert_one_line(result.err)


@pytest.mark.parametrize(
    "fmt", [[], ["--format", "mcuboot", "--pad-header"]], ids=["native", "mcuboot"]
)
def test_a_chain_of_another_key_is_refused_when_signing(
    cli: Cli, files: dict[str, Path], fmt: list[str]
) -> None:
    pki = make_pki()
    chain = files["dir"] / "chain.pem"
    chain.write_bytes(
        b"".join(c.public_bytes(Encoding.PEM) for c in (pki.leaf.cert, pki.inter.cert))
    )
    result = _sign(cli, files, "fw.img", *fmt, "--cert-chain", chain)
    assert result.code == 2
    assert "the chain's first certificate is not the signing key's certificate" in result.err
    assert_one_line(result.err)
    assert not (files["dir"] / "fw.img").exists()


def test_load_address_is_the_name_and_load_addr_still_works(
    cli: Cli, files: dict[str, Path]
) -> None:
    mcu = ["--format", "mcuboot", "--pad-header"]
    assert _sign(cli, files, "a.img", *mcu, "--load-address", "0x20000000").code == 0
    assert _sign(cli, files, "b.img", *mcu, "--load-addr", "0x20000000").code == 0
    assert (files["dir"] / "a.img").read_bytes() == (files["dir"] / "b.img").read_bytes()
    shown = cli("sign", "--help").out
    assert "--load-address" in shown and "--load-addr " not in shown
    result = _sign(cli, files, "c.img", "--load-address", "0x20000000")
    assert result.code == 2 and "--load-address applies to --format mcuboot only" in result.err
    result = _sign(cli, files, "c.img", *mcu, "--load-address", "somewhere")
    assert result.code == 2 and "not an integer: 'somewhere'" in result.err
