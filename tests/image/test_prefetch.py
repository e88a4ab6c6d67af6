"""The verify prefetch: a speed-up that must never change a verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cached_key, make_image
from otaguard.cli import verify_args
from otaguard.crypto.keys import KeyType, public_key_pem
from otaguard.image import prefetch

ENTRY = [sys.executable, "-c", "from otaguard.cli.entry import main; main()"]
BIG = prefetch.MIN_PAYLOAD + 12345


def _image(argv: list[str]) -> str | None:
    return verify_args.plain_image(argv)  # as the console entry does


def _guess(argv: list[str]) -> prefetch._Range | None:
    return prefetch._guess_range(_image(argv))


def _start(argv: list[str]) -> prefetch.Job | None:
    return prefetch.start(_image(argv))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("prefetch")
    key = cached_key(KeyType.ED25519)
    image = tmp / "big.img"
    image.write_bytes(make_image(os.urandom(BIG), [key]))
    pub = tmp / "k.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    return {"image": image, "pub": pub, "dir": tmp}


def _verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENTRY, "verify", *map(str, args)], capture_output=True, text=True, check=False
    )


def test_console_entry_verifies_and_rejects(big: dict[str, Path]) -> None:
    assert _verify("--trusted-key", big["pub"], big["image"]).returncode == 0
    bad = big["dir"] / "bad.img"
    data = bytearray(big["image"].read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    result = _verify("--trusted-key", big["pub"], bad)
    assert result.returncode == 1 and "rejected (digest)" in result.stderr


def test_guess_only_for_verify_of_one_large_native_image(big: dict[str, Path]) -> None:
    image, pub = str(big["image"]), str(big["pub"])
    guess = _guess(["verify", "--trusted-key", pub, "--json", image])
    assert guess is not None and guess.path == image and guess.length == BIG
    assert _guess(["extract", "--trusted-key", pub, image, "out"]) is None
    assert _guess(["verify", "--trusted-key", pub]) is None
    assert _guess(["verify", str(big["pub"])]) is None  # not an image


def test_digest_is_used_only_for_the_same_file_and_range(big: dict[str, Path]) -> None:
    job = _start(["verify", "--trusted-key", str(big["pub"]), str(big["image"])])
    assert job is not None
    other = big["dir"] / "copy.img"
    other.write_bytes(big["image"].read_bytes())
    guess = _guess(["verify", str(big["image"])])
    assert guess is not None
    with other.open("rb") as stream:  # same bytes, another file: not used
        assert job.digest_for(stream, guess.offset, guess.length, guess.algorithm) is None
    job = _start(["verify", str(big["image"])])
    assert job is not None
    with big["image"].open("rb") as stream:  # same file, another range: not used
        assert job.digest_for(stream, guess.offset, guess.length - 1, guess.algorithm) is None
    job = _start(["verify", str(big["image"])])
    assert job is not None
    with big["image"].open("rb") as stream:
        digest = job.digest_for(stream, guess.offset, guess.length, guess.algorithm)
    import hashlib

    data = big["image"].read_bytes()[guess.offset : guess.offset + guess.length]
    assert digest == hashlib.sha256(data).digest()
    job = _start(["verify", str(big["image"])])
    assert job is not None
    job.cancel()  # an unused child is killed and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, 0)


def test_mcuboot_prefetch_verifies_and_rejects(tmp_path: Path) -> None:
    from helpers_mcuboot import sign_bytes

    key = cached_key(KeyType.ECDSA_P256)
    image = tmp_path / "mcu.bin"
    image.write_bytes(sign_bytes(os.urandom(BIG), [key], tmp_path))
    pub = tmp_path / "k.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    guess = _guess(["verify", "--trusted-key", str(pub), str(image)])
    assert guess is not None and guess.offset == 0 and guess.algorithm == "sha256"
    assert _verify("--trusted-key", pub, image).returncode == 0
    data = bytearray(image.read_bytes())
    data[0x200 + 4096] ^= 1
    image.write_bytes(bytes(data))
    result = _verify("--trusted-key", pub, image)
    assert result.returncode == 1 and "rejected (digest)" in result.stderr


def test_a_file_rewritten_in_place_with_its_size_and_mtime_is_not_trusted(tmp_path: Path) -> None:
    """Same device, inode, size and mtime (``touch -d`` puts an mtime back), other bytes."""
    import select

    key = cached_key(KeyType.ED25519)
    image = tmp_path / "big.img"
    image.write_bytes(make_image(os.urandom(BIG), [key]))
    job = _start(["verify", str(image)])
    guess = _guess(["verify", str(image)])
    assert job is not None and guess is not None
    select.select([job.read_fd], [], [])  # the child hashed the first bytes and reported
    before = image.stat()
    other = bytearray(image.read_bytes())
    other[guess.offset + 100] ^= 1
    with image.open("r+b") as handle:  # in place: same inode
        handle.write(other)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = image.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert after.st_ctime_ns != before.st_ctime_ns or _ctime_moved(image, before, other)
    with image.open("rb") as stream:
        assert job.digest_for(stream, guess.offset, guess.length, guess.algorithm) is None


def _ctime_moved(image: Path, before: os.stat_result, data: bytearray) -> bool:
    """Rewrite again until the clock's coarse tick moves the ctime (it always does soon)."""
    import time

    for _ in range(200):
        time.sleep(0.01)
        image.write_bytes(data)
        os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
        if image.stat().st_ctime_ns != before.st_ctime_ns:
            return True
    return False
