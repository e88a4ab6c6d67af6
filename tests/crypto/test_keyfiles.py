"""``crypto/keyfiles.py``: a new key never lands where it would destroy another, or be lost."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from otaguard.crypto.keyfiles import check_key_outputs, generate_key_files
from otaguard.crypto.keys import KeyType, key_id, load_private_key, load_public_key
from otaguard.errors import UsageError


def test_generates_a_private_file_and_its_public_half(tmp_path: Path) -> None:
    out, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    new = generate_key_files(KeyType.ED25519, str(out), public_out=str(pub), passphrase=b"pw")
    assert not new.in_hsm and new.where == str(out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    private = load_private_key(out.read_bytes(), b"pw")
    assert key_id(private.public_key()) == key_id(new.public_key)
    assert key_id(load_public_key(pub.read_bytes())) == key_id(new.public_key)


def test_an_existing_key_is_replaced_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    first = generate_key_files(KeyType.ED25519, str(out))
    before = out.read_bytes()
    with pytest.raises(UsageError):
        generate_key_files(KeyType.ED25519, str(out))
    assert out.read_bytes() == before
    second = generate_key_files(KeyType.ED25519, str(out), force=True)
    assert key_id(second.public_key) != key_id(first.public_key)


def test_an_existing_public_output_refuses_before_the_private_key_is_written(
    tmp_path: Path,
) -> None:
    out, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    pub.write_bytes(b"keep")
    with pytest.raises(UsageError):
        generate_key_files(KeyType.ED25519, str(out), public_out=str(pub))
    assert not out.exists() and pub.read_bytes() == b"keep"


def test_one_file_for_both_halves_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    with pytest.raises(UsageError, match="private key would be lost"):
        generate_key_files(KeyType.ED25519, str(out), public_out=str(tmp_path / "." / "k.pem"))
    assert not out.exists()


@pytest.mark.parametrize("which", ["out", "public_out"])
def test_stdout_is_refused(tmp_path: Path, which: str) -> None:
    args = {"out": str(tmp_path / "k.pem"), "public_out": str(tmp_path / "k.pub"), which: "-"}
    with pytest.raises(UsageError, match="key files only"):
        check_key_outputs(args["out"], args["public_out"])
    assert list(tmp_path.iterdir()) == []


def test_a_pkcs11_uri_is_an_hsm_and_not_a_file(tmp_path: Path) -> None:
    assert check_key_outputs("pkcs11:token=t;object=k", str(tmp_path / "k.pub")) is True
    assert check_key_outputs(str(tmp_path / "k.pem"), None) is False
