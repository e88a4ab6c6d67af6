"""``delta create`` refuses, before writing anything, a delta that no device could apply.

Each of these was signed with exit 0 before (issue 13): a new image whose payload does not
match its digest, a base that is no image, a delta key that did not sign the new image.
Ctrl-C in the middle of a create ends as "interrupted" (exit 130) and leaves no file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from helpers import assert_one_line, cached_key, make_image
from helpers_delta import HW, Pair, make_delta
from otaguard.cli import main as cli_main
from otaguard.crypto.keys import KeyType, PrivateKey
from otaguard.crypto.signer import KeySigner
from otaguard.delta import create
from otaguard.errors import (
    DigestMismatchError,
    MalformedError,
    SignatureError,
    TruncatedError,
    UsageError,
)

OTHER = cached_key(KeyType.ECDSA_P256, 3)


def _create(old: bytes, new: bytes, *keys: PrivateKey) -> bytes:
    out = io.BytesIO()
    create(old, new, out, [KeySigner(k) for k in keys])
    return out.getvalue()


def _flipped(image: bytes, at: int) -> bytes:
    data = bytearray(image)
    data[at] ^= 1
    return bytes(data)


def test_a_new_image_whose_payload_is_not_its_digests_is_refused(pair: Pair) -> None:
    out = io.BytesIO()
    bad = _flipped(pair.new, len(pair.new) // 2)  # inside the payload
    with pytest.raises(DigestMismatchError, match="the new image: its payload"):
        create(pair.old, bad, out, [KeySigner(pair.key)])
    assert out.getvalue() == b""


@pytest.mark.parametrize(
    ("base", "error"),
    [
        (b"", TruncatedError),
        (b"\x7fELF" + bytes(4000), MalformedError),
        (b"OTAGUARD" + os.urandom(4000), MalformedError),
    ],
    ids=["empty", "elf", "garbage-after-magic"],
)
def test_a_base_that_is_no_image_is_refused(pair: Pair, base: bytes, error: type) -> None:
    with pytest.raises(error, match=r"the old image \(the delta's base\)"):
        _create(base, pair.new, pair.key)


def test_a_base_cut_short_or_a_delta_as_base_is_refused(pair: Pair) -> None:
    with pytest.raises(TruncatedError, match="base"):
        _create(pair.old[:-200], pair.new, pair.key)
    delta = make_delta(pair.key, pair.old, pair.new)[0]
    with pytest.raises(MalformedError, match=r"base.*full image, not a delta"):
        _create(delta, pair.new, pair.key)
    with pytest.raises(MalformedError, match="the new image: must be a full image"):
        _create(pair.old, delta, pair.key)


def test_a_delta_key_the_new_image_does_not_carry_is_refused(pair: Pair) -> None:
    with pytest.raises(UsageError, match="did not sign the new image"):
        _create(pair.old, pair.new, OTHER)
    with pytest.raises(UsageError, match="did not sign the new image"):  # one of two is enough
        _create(pair.old, pair.new, pair.key, OTHER)


def test_every_key_of_a_multi_signed_image_may_sign_its_delta(pair: Pair, key: PrivateKey) -> None:
    payload = os.urandom(3000)
    old = make_image(payload, [key, OTHER], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(payload + b"!", [key, OTHER], version="1.1.0", security_counter=2)
    for keys in ((key,), (OTHER,), (key, OTHER)):
        assert _create(old, new, *keys)


def test_a_carried_signature_that_does_not_verify_is_refused(pair: Pair) -> None:
    forged = _flipped(pair.new, len(pair.new) - 5)  # inside the Ed25519 signature
    with pytest.raises(SignatureError, match="the new image"):
        _create(pair.old, forged, pair.key)


# --- the CLI: exit codes, one line, no file ------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, pair: Pair) -> dict[str, Path]:
    paths = {"dir": tmp_path}
    for name, key in (("key.pem", pair.key), ("other.pem", OTHER)):
        paths[name] = tmp_path / name
        paths[name].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    for name, data in (
        ("old.img", pair.old),
        ("new.img", pair.new),
        ("bad.img", _flipped(pair.new, len(pair.new) // 2)),
        ("junk.bin", os.urandom(5000)),
    ):
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize(
    ("signer", "old", "new", "code", "words"),
    [
        ("key.pem", "old.img", "bad.img", 1, "rejected (digest): the new image"),
        ("key.pem", "junk.bin", "new.img", 1, "rejected (malformed): the old image"),
        ("other.pem", "old.img", "new.img", 2, "did not sign the new image"),
    ],
    ids=["new-digest", "base-not-an-image", "foreign-key"],
)
def test_the_cli_refuses_and_writes_nothing(
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    signer: str,
    old: str,
    new: str,
    code: int,
    words: str,
) -> None:
    out = files["dir"] / "out.delta"
    args = ["delta", "create", "--key", files[signer], files[old], files[new], out]
    assert cli_main.run([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert words in err
    assert_one_line(err)
    assert not out.exists()
    assert not [p for p in os.listdir(files["dir"]) if p.endswith(".tmp")]


def test_ctrl_c_in_the_middle_of_create_is_interrupted_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT to a real ``otaguard delta create`` process (was: "internal error: BufferError")."""
    key = cached_key(KeyType.ED25519)
    old, new = (
        make_image(os.urandom(2 << 20), [key], version=v, security_counter=1, hardware_ids=(HW,))
        for v in ("1.0.0", "1.1.0")
    )  # unrelated payloads: many seconds of matching, in 64 KiB chunks
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    command = [
        sys.executable,
        "-c",
        # Ctrl-C as in a shell's foreground job (a test runner's worker may ignore SIGINT,
        # and an ignored SIGINT is inherited): Python's KeyboardInterrupt, then the CLI
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from otaguard.cli.entry import main; main()",
        *("delta", "create", "--chunk-size", "64K", "--key", "k.pem"),
        *("old.img", "new.img", "out.delta"),
    ]
    pipe = subprocess.PIPE
    process = subprocess.Popen(command, cwd=tmp_path, stdout=pipe, stderr=pipe, text=True)
    while not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]:  # create has begun
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert err.strip() == "otaguard: interrupted" and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["k.pem", "new.img", "old.img"]
